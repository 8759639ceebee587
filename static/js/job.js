// Live job page: a WebSocket snapshot + events keep the state, progress bar, log and plot current.
(() => {
  "use strict";
  const root = document.getElementById("job");
  if (!root) return;
  const jobId = root.dataset.jobId;
  const $ = (id) => document.getElementById(id);
  const series = JSON.parse($("job-metrics-data").textContent || "{}");
  const finished = new Set(["succeeded", "failed", "cancelled"]);
  let retryMs = 500;
  let revision = 0;

  function drawPlot() {
    const el = $("job-metrics");
    const names = Object.keys(series);
    $("job-metrics-empty").hidden = names.length > 0;
    if (!window.Plotly || !names.length) return;
    const traces = names.map((n) => ({ x: series[n].x, y: series[n].y, name: n, mode: "lines" }));
    // The arrays grow in place, so Plotly needs a new datarevision to notice new points.
    Plotly.react(el, traces, {
      datarevision: ++revision, margin: { t: 10, r: 10, b: 40, l: 50 }, xaxis: { title: { text: "step" } },
    }, { displaylogo: false, responsive: true });
  }

  function setState(state) {
    const badge = $("job-state");
    badge.className = "badge state-" + state;
    badge.textContent = state.charAt(0).toUpperCase() + state.slice(1);
    const cancel = $("job-cancel");
    if (cancel && finished.has(state)) cancel.hidden = true;
  }

  let startedAt = Date.parse($("job-eta").dataset.started || "") || null;

  function setProgress(p, step, total) {
    $("job-progress").value = p;
    $("job-percent").textContent = Math.round(p * 100) + "%";
    if (step && total) $("job-steps").textContent = `step ${step} of ${total}`;
    // ETA at the pace so far; hidden until there is a pace to go by.
    const state = $("job-state").textContent.toLowerCase();
    if (startedAt && p > 0 && p < 1 && state === "running") {
      const left = ((Date.now() - startedAt) / 1000) * (1 - p) / p;
      $("job-eta").textContent = left < 90 ? `about ${Math.round(left)} s left` : `about ${Math.round(left / 60)} min left`;
    } else {
      $("job-eta").textContent = "";
    }
  }

  function addPoint(name, step, value) {
    const s = series[name] || (series[name] = { x: [], y: [] });
    // Points can arrive both in the re-read below and as live events: keep steps increasing.
    if (s.x.length && s.x[s.x.length - 1] >= step) return;
    s.x.push(step); s.y.push(value);
  }

  // Events sent before this page subscribed are not replayed: re-read the stored metrics.
  async function reloadMetrics() {
    const response = await fetch(`/api/jobs/${jobId}/metrics/`, { credentials: "same-origin" });
    if (!response.ok) return;
    for (const key of Object.keys(series)) delete series[key];
    for (const m of await response.json()) addPoint(m.name, m.step, m.value);
    drawPlot();
  }

  // Files the job offers for download (a dataset export's zip) exist once it has finished: a page
  // loaded before that fetches them once; one loaded after has them from the server.
  let downloadsShown = finished.has($("job-state").textContent.trim().toLowerCase());
  async function reloadDownloads() {
    downloadsShown = true;
    const response = await fetch(`/api/jobs/${jobId}/artifacts/`, { credentials: "same-origin" });
    if (!response.ok) return;
    const links = (await response.json()).filter((a) => a.download).map((a) => {
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
        if (ev.started_at) startedAt = Date.parse(ev.started_at);
        setState(ev.state); setProgress(ev.progress, ev.step, ev.total_steps);
        if (ev.worker) $("job-worker").textContent = ev.worker;
        $("job-attempt").textContent = ev.attempt;
        $("job-message").textContent = ev.message || "";
        if (ev.error) { $("job-error").hidden = false; $("job-error").textContent = ev.error; }
        if (ev.result && Object.keys(ev.result).length) $("job-result").textContent = JSON.stringify(ev.result, null, 2);
        if (finished.has(ev.state) && !downloadsShown) reloadDownloads();
        break;
      case "batch": ev.events.forEach(handle); break;
      case "state":
        setState(ev.state);
        if (ev.state === "running") startedAt = Date.now();
        if (ev.worker) $("job-worker").textContent = ev.worker;
        break;
      case "progress": setProgress(ev.progress, ev.step, null); $("job-message").textContent = ev.message || ""; break;
      case "log": $("job-log").textContent += new Date().toTimeString().slice(0, 8) + " " + ev.text + "\n"; break;
      case "metric":
        for (const [name, value] of Object.entries(ev.values)) addPoint(name, ev.step, value);
        drawPlot();
        break;
    }
  }

  // Without WebSockets (a proxy that drops them), poll the API instead.
  async function poll() {
    const response = await fetch(`/api/jobs/${jobId}/`, { credentials: "same-origin" });
    if (response.ok) {
      const job = await response.json();
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
      const state = $("job-state").textContent.toLowerCase();
      if (finished.has(state)) { $("job-live").textContent = ""; return; }
      if (!opened && ++failures >= 3) { $("job-live").textContent = "polling"; poll(); return; }
      $("job-live").textContent = "reconnecting…";
      setTimeout(connect, (retryMs = Math.min(retryMs * 2, 10000)));
    };
  }

  window.addEventListener("load", drawPlot);
  connect();
})();
