// Live job page: a WebSocket snapshot + events keep the state, buttons, progress, ETA, log, the
// kind's panel and the metric charts current. Charts: one panel per metric (or group), log scale
// and smoothing toggles, other runs overlaid with the settings that differ.
(() => {
  "use strict";
  const root = document.getElementById("job");
  if (!root) return;
  const jobId = Number(root.dataset.jobId);
  const $ = (id) => document.getElementById(id);
  const series = JSON.parse($("job-metrics-data").textContent || "{}");
  const config = JSON.parse($("job-config-data").textContent || "{}");
  const finished = new Set(["succeeded", "failed", "cancelled"]);
  let retryMs = 500;
  let state = $("job-state").dataset.state;

  // ---------------------------------------------------------------- state, buttons, progress, ETA

  function setState(next) {
    state = next;
    const badge = $("job-state");
    badge.className = "badge state-" + next;
    badge.dataset.state = next;
    badge.textContent = next.charAt(0).toUpperCase() + next.slice(1);
    // Cancel while it can still stop; Retry once it failed or was cancelled (the forms are only
    // on the page for those allowed to use them).
    const cancel = $("job-cancel"), retry = $("job-retry");
    if (cancel) cancel.hidden = finished.has(next);
    if (retry) retry.hidden = !(next === "failed" || next === "cancelled") && !retry.dataset.orphaned;
    if (next !== "running") etaAt = null;
    showEta();
  }

  let totalSteps = Number($("job-steps").dataset.total) || null;
  function setProgress(p, step) {
    $("job-progress").value = p;
    $("job-percent").textContent = Math.round(p * 100) + "%";
    if (step && totalSteps) $("job-steps").textContent = `step ${step} of ${totalSteps}`;
  }

  // The runner estimates the time left from the pace of its recent steps (apps/jobs/eta.py); the
  // page counts down between its reports.
  let etaAt = null;
  function setEta(seconds) {
    etaAt = seconds === null || seconds === undefined ? null : Date.now() + seconds * 1000;
    showEta();
  }
  function describe(seconds) {
    if (seconds < 90) return `about ${Math.round(seconds)} s left`;
    const minutes = Math.round(seconds / 60);
    return minutes < 90 ? `about ${minutes} min left` : `about ${Math.floor(minutes / 60)} h ${minutes % 60} min left`;
  }
  function showEta() {
    const el = $("job-eta");
    if (state !== "running") el.textContent = "";
    else if (etaAt === null) el.textContent = $("job-progress").value > 0 ? "estimating the time left…" : "";
    else el.textContent = describe(Math.max(0, (etaAt - Date.now()) / 1000));
  }
  setInterval(showEta, 1000);

  // ---------------------------------------------------------------- the kind's live panel

  // Server-rendered panels marked data-live-panel (the agent run's trajectory, a distillation's
  // runs) are fetched again when the job changes state, and at most every few seconds meanwhile.
  let panelTimer = null, panelFetched = 0;
  async function refreshPanels() {
    panelTimer = null;
    panelFetched = Date.now();
    if (!document.querySelector("[data-live-panel]")) return;
    const response = await fetch(`/jobs/${jobId}/panel/`, { credentials: "same-origin" });
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const panel of document.querySelectorAll("[data-live-panel]")) {
      const next = fresh.getElementById(panel.id);
      if (next) panel.replaceWith(document.importNode(next, true));
    }
  }
  function schedulePanels(now) {
    if (now) { clearTimeout(panelTimer); refreshPanels(); return; }
    if (panelTimer === null) panelTimer = setTimeout(refreshPanels, Math.max(0, 3000 - (Date.now() - panelFetched)));
  }

  // ---------------------------------------------------------------- charts

  const prefs = JSON.parse(localStorage.getItem("job-chart-prefs") || "{}");
  const logScale = $("chart-log"), smoothing = $("chart-smoothing");
  logScale.checked = Boolean(prefs.log);
  smoothing.value = prefs.smoothing ?? 0;
  const compared = new Map();  // job id -> {title, config, series}
  const palette = ["#3b5bdb", "#e8590c", "#2f9e44", "#ae3ec9", "#1098ad", "#f03e3e", "#5c940d", "#862e9c"];
  let drawPending = false;
  // Panels to draw again: a live point redraws its own panel, a toggle or another run all of them.
  const dirty = new Set();
  let allDirty = true;

  // advantage_min / _max / _std share a panel; every other metric has its own.
  const groupOf = (name) => name.replace(/_(min|max|std|mean|p\d\d)$/, "");

  // TensorBoard's smoothing: an exponential moving average, debiased at the start.
  function smooth(ys, weight) {
    if (!weight) return ys;
    let last = 0, count = 0;
    return ys.map((y) => {
      last = last * weight + (1 - weight) * y;
      count += 1;
      return last / (1 - weight ** count);
    });
  }

  function addPoint(target, name, step, value) {
    const s = target[name] || (target[name] = { x: [], y: [] });
    // Points can arrive both in a re-read and as live events: keep steps increasing.
    if (s.x.length && s.x[s.x.length - 1] >= step) return;
    s.x.push(step); s.y.push(value);
  }

  function traces(name, runSeries, label, color, weight) {
    const s = runSeries[name];
    if (!s) return [];
    const line = { x: s.x, y: smooth(s.y, weight), name: `${label} ${name}`, mode: "lines", line: { color, width: 2 },
                   legendgroup: label };
    // With smoothing, the raw points stay visible underneath, faint (as W&B shows them).
    return weight ? [{ x: s.x, y: s.y, mode: "lines", line: { color, width: 1 }, opacity: 0.25, showlegend: false,
                       hoverinfo: "skip", legendgroup: label }, line] : [line];
  }

  function panelFor(group) {
    const container = $("job-metrics");
    let panel = container.querySelector(`[data-group="${CSS.escape(group)}"]`);
    if (!panel) {
      panel = document.createElement("figure");
      panel.className = "metric-panel";
      panel.dataset.group = group;
      const caption = document.createElement("figcaption");
      caption.textContent = group;
      const plot = document.createElement("div");
      plot.className = "metric-plot";
      panel.append(caption, plot);
      container.append(panel);
    }
    return panel.querySelector(".metric-plot");
  }

  function drawCharts() {
    drawPending = false;
    const names = new Set(Object.keys(series));
    for (const other of compared.values()) Object.keys(other.series).forEach((n) => names.add(n));
    $("job-metrics-empty").hidden = names.size > 0;
    $("chart-tools").hidden = names.size === 0;
    if (!window.Plotly || !names.size) return;
    const groups = new Map();
    for (const name of [...names].sort()) {
      const group = groupOf(name);
      groups.set(group, [...(groups.get(group) || []), name]);
    }
    const weight = Number(smoothing.value);
    const runs = [{ label: `#${jobId}`, series }, ...[...compared].map(([id, other]) => ({ label: `#${id}`, series: other.series }))];
    const redraw = allDirty ? groups : new Map([...groups].filter(([group]) => dirty.has(group)));
    allDirty = false;
    dirty.clear();
    for (const [group, members] of redraw) {
      const data = [];
      runs.forEach((run, r) => members.forEach((name, m) => {
        data.push(...traces(name, run.series, run.label, palette[(r * members.length + m) % palette.length], weight));
      }));
      Plotly.react(panelFor(group), data, {
        height: 240, margin: { t: 8, r: 8, b: 36, l: 52 }, showlegend: runs.length > 1 || members.length > 1,
        legend: { orientation: "h", y: -0.25 }, xaxis: { title: { text: "step" } },
        yaxis: { type: logScale.checked ? "log" : "linear", exponentformat: "e" },
        datarevision: Date.now(),
      }, { displaylogo: false, responsive: true });
    }
  }

  function scheduleCharts(name) {
    if (name === undefined) allDirty = true;
    else dirty.add(groupOf(name));
    if (!drawPending) { drawPending = true; requestAnimationFrame(drawCharts); }
  }

  function savePrefs() {
    localStorage.setItem("job-chart-prefs", JSON.stringify({ log: logScale.checked, smoothing: Number(smoothing.value) }));
    $("chart-smoothing-value").textContent = Number(smoothing.value).toFixed(2);
    scheduleCharts();
  }
  logScale.addEventListener("change", savePrefs);
  smoothing.addEventListener("input", savePrefs);
  $("chart-smoothing-value").textContent = Number(smoothing.value).toFixed(2);

  async function fetchJson(url) {
    const response = await fetch(url, { credentials: "same-origin" });
    return response.ok ? response.json() : null;
  }

  // Events sent before this page subscribed are not replayed: re-read the stored metrics.
  async function reloadMetrics() {
    const points = await fetchJson(`/api/jobs/${jobId}/metrics/`);
    if (!points) return;
    for (const key of Object.keys(series)) delete series[key];
    for (const m of points) addPoint(series, m.name, m.step, m.value);
    scheduleCharts();
  }

  // ---------------------------------------------------------------- other runs overlaid

  const flat = (value, prefix = "", out = {}) => {
    if (value && typeof value === "object" && !Array.isArray(value)) {
      for (const [k, v] of Object.entries(value)) flat(v, prefix ? `${prefix}.${k}` : k, out);
    } else out[prefix] = JSON.stringify(value);
    return out;
  };

  function showDifferences() {
    const table = $("compare-diff");
    const rows = [{ label: `#${jobId} (this job)`, values: flat(config) },
                  ...[...compared].map(([id, other]) => ({ label: `#${id} ${other.title}`, values: flat(other.config) }))];
    const keys = [...new Set(rows.flatMap((r) => Object.keys(r.values)))].sort()
      .filter((k) => rows.some((r) => r.values[k] !== rows[0].values[k]));
    table.hidden = compared.size === 0;
    const head = document.createElement("tr");
    head.append(...["setting", ...rows.map((r) => r.label)].map((text) => {
      const th = document.createElement("th"); th.textContent = text; return th;
    }));
    const body = keys.map((key) => {
      const tr = document.createElement("tr");
      tr.append(...[key, ...rows.map((r) => r.values[key] ?? "—")].map((text) => {
        const td = document.createElement("td"); td.textContent = text; return td;
      }));
      return tr;
    });
    if (!keys.length) {
      const tr = document.createElement("tr"), td = document.createElement("td");
      td.colSpan = rows.length + 1; td.textContent = "Same settings."; tr.append(td); body.push(tr);
    }
    table.replaceChildren(head, ...body);
    const list = $("compare-list");
    list.replaceChildren(...[...compared].map(([id, other]) => {
      const li = document.createElement("li");
      const link = document.createElement("a");
      link.href = `/jobs/${id}/`; link.textContent = `#${id} ${other.title}`;
      const remove = document.createElement("button");
      remove.type = "button"; remove.className = "link-button"; remove.textContent = "×";
      remove.title = "Stop comparing"; remove.setAttribute("aria-label", `Stop comparing with job ${id}`);
      remove.addEventListener("click", () => { compared.delete(id); afterCompareChange(); });
      li.append(link, " ", remove);
      return li;
    }));
  }

  function afterCompareChange() {
    const url = new URL(location.href);
    if (compared.size) url.searchParams.set("compare", [...compared.keys()].join(","));
    else url.searchParams.delete("compare");
    history.replaceState(null, "", url);
    showDifferences();
    scheduleCharts();
  }

  async function compareWith(id) {
    if (!id || id === jobId || compared.has(id)) return;
    const [job, points] = await Promise.all([fetchJson(`/api/jobs/${id}/`), fetchJson(`/api/jobs/${id}/metrics/`)]);
    if (!job || !points) return;
    const other = { title: job.title || `${job.kind} #${id}`, config: job.config || {}, series: {} };
    for (const m of points) addPoint(other.series, m.name, m.step, m.value);
    compared.set(id, other);
    afterCompareChange();
  }

  const picker = $("compare-with");
  picker?.addEventListener("change", () => { compareWith(Number(picker.value)); picker.value = ""; });
  const fromUrl = (new URL(location.href).searchParams.get("compare") || "").split(",").map(Number).filter(Boolean);
  fromUrl.forEach(compareWith);

  // ---------------------------------------------------------------- downloads, events, socket

  // Files the job offers for download (a dataset export's zip) exist once it has finished: a page
  // loaded before that fetches them once; one loaded after has them from the server.
  let downloadsShown = finished.has(state);
  async function reloadDownloads() {
    downloadsShown = true;
    const artifacts = await fetchJson(`/api/jobs/${jobId}/artifacts/`);
    if (!artifacts) return;
    const links = artifacts.filter((a) => a.download).map((a) => {
      const link = document.createElement("a");
      link.className = "button";
      link.href = `/jobs/${jobId}/artifacts/${a.id}/download/`;
      link.download = "";
      link.textContent = `Download ${a.name} (${(a.size_bytes / 1e6).toFixed(1)} MB)`;
      return link;
    });
    $("job-downloads").replaceChildren(...links);
    const hint = $("job-downloads-hint");
    if (hint) hint.hidden = true;
  }

  function handle(ev) {
    // Kind-specific panels (job-rl.js) follow the same events without a second socket.
    document.dispatchEvent(new CustomEvent("job:event", { detail: ev }));
    switch (ev.kind) {
      case "snapshot":
        reloadMetrics();
        if (ev.total_steps) totalSteps = ev.total_steps;
        setState(ev.state); setProgress(ev.progress, ev.step); setEta(ev.eta_s);
        if (ev.worker) $("job-worker").textContent = ev.worker;
        $("job-attempt").textContent = ev.attempt;
        $("job-message").textContent = ev.message || "";
        $("job-error").hidden = !ev.error;
        $("job-error").textContent = ev.error || "";
        if (ev.result && Object.keys(ev.result).length) $("job-result").textContent = JSON.stringify(ev.result, null, 2);
        if (finished.has(ev.state) && !downloadsShown) reloadDownloads();
        schedulePanels(true);
        break;
      case "batch": ev.events.forEach(handle); break;
      case "state":
        setState(ev.state);
        if (ev.worker) $("job-worker").textContent = ev.worker;
        schedulePanels(true);
        break;
      case "progress":
        setProgress(ev.progress, ev.step); setEta(ev.eta_s);
        $("job-message").textContent = ev.message || "";
        schedulePanels(false);
        break;
      case "log":
        $("job-log").textContent += new Date().toTimeString().slice(0, 8) + " " + ev.text + "\n";
        schedulePanels(false);
        break;
      case "metric":
        for (const [name, value] of Object.entries(ev.values)) {
          addPoint(series, name, ev.step, value);
          scheduleCharts(name);
        }
        schedulePanels(false);
        break;
    }
  }

  // Without WebSockets (a proxy that drops them), poll the API instead.
  async function poll() {
    const job = await fetchJson(`/api/jobs/${jobId}/`);
    if (job) {
      handle({ ...job, kind: "snapshot" });  // the job's own "kind" (selftest...) must not win
      if (finished.has(job.state)) { $("job-live").textContent = ""; return; }
    }
    setTimeout(poll, 2000);
  }

  let failures = 0;
  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws/jobs/${jobId}/`);
    let opened = false;
    ws.onopen = () => { opened = true; failures = 0; retryMs = 500; $("job-live").textContent = "live"; };
    ws.onmessage = (m) => handle(JSON.parse(m.data));
    ws.onclose = (event) => {
      // 4401: the session ended (logout, expiry); 4403: the role was taken away. Reconnecting would be refused.
      if (event.code === 4401 || event.code === 4403) { $("job-live").textContent = "not live: log in again"; return; }
      if (finished.has(state)) { $("job-live").textContent = ""; return; }
      if (!opened && ++failures >= 3) { $("job-live").textContent = "polling"; poll(); return; }
      $("job-live").textContent = "reconnecting…";
      setTimeout(connect, (retryMs = Math.min(retryMs * 2, 10000)));
    };
  }

  window.addEventListener("load", () => scheduleCharts());
  setState(state);
  connect();
})();
