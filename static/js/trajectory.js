// Trajectory viewer: a virtualised list of turns for 1,000+ turn runs.
//
// The page carries a compact index (role, tokens, length, tool names per turn); turn text is
// fetched in chunks of CHUNK turns only when they come into view, and only the turns near the
// viewport exist in the DOM, absolutely positioned from a prefix sum of their heights
// (estimated first, then measured). Agent text is untrusted: it only ever reaches the DOM
// through textContent / text nodes, never innerHTML — except the server's nh3-sanitised HTML of
// a turn's Markdown (data.html), shown in Markdown mode.
"use strict";
(() => {
  const index = JSON.parse(document.getElementById("turn-index").textContent);
  const cfg = JSON.parse(document.getElementById("viewer-config").textContent);
  const scroller = document.getElementById("turns");
  const inner = document.getElementById("turns-inner");
  const N = index.role.length;
  const ROLE = { s: "system", u: "user", a: "assistant", t: "tool" };
  const CHUNK = 100;
  const OVERSCAN = 900; // px rendered above and below the viewport
  const COLLAPSE_LINES = 14;
  const COLLAPSE_CHARS = 2000;
  const GAP = 8;

  const cumulative = new Array(N);
  index.tokens.reduce((sum, t, i) => (cumulative[i] = sum + t), 0);
  const flagged = new Set(index.flagged);
  const noLoss = index.no_loss.slice();
  const annotations = index.annotations; // turn -> [[label, note, author, date]]
  const heights = new Float64Array(N);
  const offsets = new Float64Array(N + 1);
  const chunks = new Map(); // chunk number -> turns array, or a pending promise
  const failures = new Map(); // chunk number -> failed fetches so far
  const live = new Map(); // turn -> element
  const expanded = new Set();
  const fmt = new Intl.NumberFormat();
  const approx = cfg.estimated ? "~" : "";

  let current = 0;
  let prefixEnd = cfg.prefixEnd; // the split's pinned prefix (null: automatic)
  let anchor = { index: 0, shift: 0 }; // keeps the view steady while heights get measured
  let programmaticTop = null;
  let userScrolled = false;
  let search = { q: "", hits: [], pos: -1, set: new Set() };

  // ------------------------------------------------------------------ layout

  function estimate(i) {
    const lines = Math.min(COLLAPSE_LINES, Math.ceil(index.chars[i] / 100) + 1);
    return 46 + lines * 18 + (index.calls[i] ? 44 : 0) + GAP;
  }
  for (let i = 0; i < N; i++) heights[i] = estimate(i);

  function layout() {
    for (let i = 0; i < N; i++) offsets[i + 1] = offsets[i] + heights[i];
    inner.style.height = `${offsets[N]}px`;
  }

  function turnAt(y) {
    let lo = 0;
    let hi = N - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (offsets[mid] <= y) lo = mid;
      else hi = mid - 1;
    }
    return Math.max(0, lo);
  }

  function setTop(y) {
    scroller.scrollTop = Math.max(0, Math.round(y));
    // Read it back: the browser clamps at the end of the list, and the scroll event that
    // follows must still be recognised as ours, not as the user moving the view.
    programmaticTop = scroller.scrollTop;
  }

  // ------------------------------------------------------------------ data

  function turnData(i) {
    const chunk = chunks.get(Math.floor(i / CHUNK));
    return Array.isArray(chunk) ? chunk[i % CHUNK] || null : null;
  }

  function load(c) {
    if (chunks.has(c)) return;
    const start = c * CHUNK;
    // The page's inline script already asked for the chunk it opens on.
    const prefetch = window.trajectoryPrefetch;
    const request = prefetch && prefetch.chunk === c
      ? prefetch.turns.then((body) => body || Promise.reject(new Error("prefetch failed")))
      : fetch(`${cfg.turnsUrl}?start=${start}&end=${start + CHUNK}`, {
        headers: { Accept: "application/json" }, credentials: "same-origin",
      }).then((r) => (r.ok ? r.json() : Promise.reject(new Error(`HTTP ${r.status}`))));
    if (prefetch && prefetch.chunk === c) window.trajectoryPrefetch = null;
    const promise = request
      .then((body) => {
        chunks.set(c, body.turns);
        for (let i = start; i < start + CHUNK; i++) live.get(i)?.remove(), live.delete(i);
        schedule();
      })
      .catch(() => {
        // A failed fetch is retried with a growing pause while its turns are still in view.
        chunks.delete(c);
        const tries = (failures.get(c) || 0) + 1;
        failures.set(c, tries);
        if (tries <= 5) setTimeout(schedule, 250 * tries);
      });
    chunks.set(c, promise);
  }

  // ------------------------------------------------------------------ building one turn

  let markdownMode = localStorage.getItem("klong-trajectory-markdown") !== "0";
  function toggleMarkdown() {
    markdownMode = !markdownMode;
    localStorage.setItem("klong-trajectory-markdown", markdownMode ? "1" : "0");
    const box = document.getElementById("markdown-toggle");
    if (box) box.checked = markdownMode;
    for (const k of [...live.keys()]) rebuild(k);
    render();
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function appendHighlighted(parent, text, q) {
    if (!q) { parent.textContent = text; return; }
    const lower = text.toLowerCase();
    const needle = q.toLowerCase();
    let at = 0;
    for (let hit = lower.indexOf(needle); hit !== -1; hit = lower.indexOf(needle, at)) {
      if (hit > at) parent.append(document.createTextNode(text.slice(at, hit)));
      parent.append(el("mark", "hit", text.slice(hit, hit + needle.length)));
      at = hit + needle.length;
    }
    if (at < text.length) parent.append(document.createTextNode(text.slice(at)));
  }

  function build(i) {
    const data = turnData(i);
    const role = ROLE[index.role[i]];
    const article = el("article", `turn role-${role}`);
    article.id = `turn-${i}`;
    article.dataset.index = i;
    if (i === current) article.classList.add("current");
    if (flagged.has(i)) article.classList.add("flagged");
    if (search.set.has(i)) article.classList.add("search-hit");

    const head = el("header", "turn-head");
    head.append(el("a", "turn-no", `#${i}`), el("span", "turn-role", role));
    head.lastChild.href = `#turn-${i}`;
    head.firstChild.href = `#turn-${i}`;
    if (data && data.source_role) head.append(el("span", "muted", `(${data.source_role})`));
    if (index.calls[i]) head.append(el("span", "turn-calls", index.calls[i]));
    if (flagged.has(i)) head.append(el("span", "badge flag", "blacklisted URL"));
    if (noLoss[i]) head.append(el("span", "badge noloss", "no loss"));
    if (prefixEnd !== null && prefixEnd !== undefined && i <= prefixEnd) head.append(el("span", "badge prefix", "prefix"));
    for (const [label, note, author, date] of annotations[i] || []) {
      const badge = el("span", "badge label", label);
      badge.title = `${note ? `${note} — ` : ""}${author || "?"}, ${date}`;
      head.append(badge);
    }
    const tokens = el("span", "turn-tokens", `${approx}${fmt.format(index.tokens[i])} tok · Σ ${approx}${fmt.format(cumulative[i])}`);
    tokens.title = cfg.estimated ? "Estimated: characters / 4 + 4 per message" : "Tokens of this turn · cumulative";
    head.append(tokens);
    article.append(head);

    if (!data) {
      article.append(el("div", "turn-loading", "loading…"));
      return article;
    }
    article.dataset.loaded = "1";
    if (data.reasoning) {
      const details = el("details", "turn-reasoning");
      details.append(el("summary", "", `reasoning (${fmt.format(data.reasoning.length)} chars)`));
      const pre = el("pre", "reasoning");
      appendHighlighted(pre, data.reasoning, search.set.has(i) ? search.q : "");
      details.append(pre);
      details.addEventListener("toggle", () => schedule());
      article.append(details);
    }
    const text = data.text || "";
    const lines = text.split("\n");
    const long = lines.length > COLLAPSE_LINES || text.length > COLLAPSE_CHARS;
    let shown = text;
    if (long && !expanded.has(i)) {
      shown = lines.slice(0, COLLAPSE_LINES).join("\n").slice(0, COLLAPSE_CHARS);
      // A search match past the cut would be invisible: show the whole turn instead.
      if (search.set.has(i) && !shown.toLowerCase().includes(search.q.toLowerCase())) shown = text;
    }
    // Markdown mode shows the sanitised rendering of a whole message; a search hit or a
    // collapsed long turn is shown as text, so highlights and the cut stay exact.
    if (text && markdownMode && data.html && shown === text && !search.set.has(i)) {
      const div = el("div", "turn-text markdown");
      div.innerHTML = data.html;  // sanitised on the server (nh3): no script, no handlers
      article.append(div);
    } else if (text) {
      const pre = el("pre", "turn-text");
      appendHighlighted(pre, shown, search.set.has(i) ? search.q : "");
      article.append(pre);
    }
    if (long) {
      const more = shown.length < text.length;
      const button = el("button", "expand", more
        ? `Show all ${fmt.format(lines.length)} lines (${fmt.format(text.length)} chars)`
        : "Collapse");
      button.type = "button";
      button.addEventListener("click", () => toggleExpand(i));
      article.append(button);
    }
    for (const call of data.calls || []) {
      const box = el("div", "tool-call");
      box.append(el("span", "call-name", `→ ${call.name || "(tool)"}`));
      if (call.id) box.append(el("span", "muted call-id", call.id));
      const args = typeof call.arguments === "string" ? call.arguments : JSON.stringify(call.arguments, null, 2);
      const pre = el("pre", "call-args");
      appendHighlighted(pre, args, search.set.has(i) ? search.q : "");
      box.append(pre);
      article.append(box);
    }
    if (role === "tool" && data.call_id) article.append(el("div", "muted small", `result of ${data.call_id}`));
    return article;
  }

  function rebuild(i) {
    live.get(i)?.remove();
    live.delete(i);
  }

  function toggleExpand(i) {
    if (expanded.has(i)) expanded.delete(i);
    else expanded.add(i);
    anchor = { index: i, shift: scroller.scrollTop - offsets[i] };
    rebuild(i);
    render();
  }

  // ------------------------------------------------------------------ rendering

  let frame = 0;
  function schedule() {
    if (!frame) frame = requestAnimationFrame(() => { frame = 0; render(); });
  }

  function render() {
    const top = scroller.scrollTop;
    const first = turnAt(top - OVERSCAN);
    const last = turnAt(top + scroller.clientHeight + OVERSCAN);
    for (let c = Math.floor(first / CHUNK); c <= Math.floor(last / CHUNK); c++) load(c);
    for (const [i, node] of live) {
      if (i < first || i > last) { node.remove(); live.delete(i); }
    }
    for (let i = first; i <= last; i++) {
      if (!live.has(i)) {
        const node = build(i);
        live.set(i, node);
        inner.append(node);
      }
    }
    // Measure what is on screen, then re-place everything so the anchor turn stays put.
    let changed = false;
    for (const [i, node] of live) {
      // A placeholder keeps its estimate: measuring it would shrink the list, then grow it
      // again when the text arrives, and the view would jump.
      if (!node.dataset.loaded) continue;
      const h = node.offsetHeight + GAP;
      if (Math.abs(h - heights[i]) > 0.5) { heights[i] = h; changed = true; }
    }
    if (changed) layout();
    for (const [i, node] of live) node.style.transform = `translateY(${offsets[i]}px)`;
    if (changed) setTop(offsets[anchor.index] + anchor.shift);
    followView();
    document.getElementById("position").textContent = `turn ${current} of ${N - 1}`;
    minimap.update();
  }

  scroller.addEventListener("scroll", () => {
    if (programmaticTop !== null && Math.abs(scroller.scrollTop - programmaticTop) < 2) {
      programmaticTop = null;
    } else {
      programmaticTop = null;
      const i = turnAt(scroller.scrollTop);
      anchor = { index: i, shift: scroller.scrollTop - offsets[i] };
      userScrolled = true;
    }
    schedule();
  }, { passive: true });

  function onScreen(i) {
    const top = scroller.scrollTop;
    return offsets[i + 1] > top && offsets[i] < top + scroller.clientHeight;
  }

  // The user scrolled the current turn out of view (mouse, scrollbar): the turn at the top of
  // the view becomes current, so j / k / a / e act where the user looks, not where they were.
  function followView() {
    if (!userScrolled || !N) return;
    userScrolled = false;
    if (onScreen(current)) return;
    const top = scroller.scrollTop;
    let i = turnAt(top);
    if (offsets[i] < top - 1 && i + 1 < N && offsets[i + 1] < top + scroller.clientHeight) i += 1;
    setCurrent(i, { scroll: false });
  }

  // ------------------------------------------------------------------ minimap
  // Cumulative tokens over turns on a 2D canvas: no WebGL, no eval, nothing the page's CSP
  // forbids, and no 4 MB charting library to evaluate on the main thread. The curve, tool calls
  // and flagged turns are drawn once per size; the visible range and the current turn on top.

  const minimap = (() => {
    const box = document.getElementById("minimap");
    if (!box || !N) return { update() {} };
    const canvas = document.createElement("canvas");
    canvas.className = "minimap-canvas";
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", `Cumulative tokens over ${N} turns (${approx}${fmt.format(cumulative[N - 1])} in all), `
      + `${index.calls.filter(Boolean).length} turns with tool calls; click to go to a turn`);
    box.replaceChildren(canvas);
    const PAD = { left: 52, right: 10, top: 20, bottom: 18 };
    const base = document.createElement("canvas"); // the static layer, copied on every frame
    let width = 0;
    let height = 0;
    let frame = 0;
    const x = (i) => PAD.left + (N > 1 ? (i / (N - 1)) : 0.5) * (width - PAD.left - PAD.right);
    const total = Math.max(1, cumulative[N - 1]);
    const y = (tokens) => height - PAD.bottom - (tokens / total) * (height - PAD.top - PAD.bottom);
    const turnAtX = (px) => Math.max(0, Math.min(N - 1, Math.round(((px - PAD.left) / (width - PAD.left - PAD.right)) * (N - 1))));

    function drawBase() {
      const ratio = window.devicePixelRatio || 1;
      width = box.clientWidth;
      height = box.clientHeight;
      for (const c of [canvas, base]) {
        c.width = Math.round(width * ratio);
        c.height = Math.round(height * ratio);
      }
      canvas.style.width = `${width}px`;
      canvas.style.height = `${height}px`;
      const g = base.getContext("2d");
      g.setTransform(ratio, 0, 0, ratio, 0, 0);
      g.font = "11px system-ui, sans-serif";
      g.fillStyle = "#868e96";
      g.strokeStyle = "#dee2e6";
      g.beginPath();
      g.moveTo(PAD.left, y(0)); g.lineTo(width - PAD.right, y(0));
      g.moveTo(PAD.left, y(total)); g.lineTo(width - PAD.right, y(total));
      g.stroke();
      g.textAlign = "right";
      g.fillText(`${approx}${fmt.format(total)}`, PAD.left - 6, y(total) + 4);
      g.fillText("0", PAD.left - 6, y(0) + 4);
      g.textAlign = "left";
      g.fillText("turn 0", PAD.left, height - 4);
      g.textAlign = "right";
      g.fillText(`turn ${N - 1}`, width - PAD.right, height - 4);
      // One vertex per pixel column at most: cumulative tokens only grow, so the column's last
      // turn is its top.
      g.strokeStyle = "#3b5bdb";
      g.lineWidth = 1.5;
      g.beginPath();
      let column = -1;
      for (let i = 0; i < N; i++) {
        const px = Math.round(x(i));
        if (px === column && i < N - 1 && Math.round(x(i + 1)) === px) continue;
        column = px;
        if (i === 0) g.moveTo(x(i), y(cumulative[i])); else g.lineTo(x(i), y(cumulative[i]));
      }
      g.stroke();
      g.fillStyle = "#f08c00";
      for (let i = 0; i < N; i++) if (index.calls[i]) g.fillRect(Math.round(x(i)), height - PAD.bottom - 4, 1, 4);
      g.strokeStyle = "#e03131";
      g.lineWidth = 2;
      for (const i of index.flagged) {
        const cx = x(i);
        const cy = y(cumulative[i]);
        g.beginPath();
        g.moveTo(cx - 4, cy - 4); g.lineTo(cx + 4, cy + 4); g.moveTo(cx + 4, cy - 4); g.lineTo(cx - 4, cy + 4);
        g.stroke();
      }
      g.textAlign = "left";
      g.fillStyle = "#3b5bdb";
      g.fillText(`cumulative tokens${cfg.estimated ? " (est.)" : ""}`, PAD.left, 13);
      g.fillStyle = "#f08c00";
      g.fillText("▮ tool calls", PAD.left + 150, 13);
      if (index.flagged.length) { g.fillStyle = "#e03131"; g.fillText("✕ blacklisted URL", PAD.left + 240, 13); }
    }

    function draw() {
      frame = 0;
      if (box.clientWidth !== width || box.clientHeight !== height) drawBase();
      const ratio = window.devicePixelRatio || 1;
      const g = canvas.getContext("2d");
      g.setTransform(1, 0, 0, 1, 0, 0);
      g.clearRect(0, 0, canvas.width, canvas.height);
      g.drawImage(base, 0, 0);
      g.setTransform(ratio, 0, 0, ratio, 0, 0);
      const top = scroller.scrollTop;
      const first = turnAt(top);
      const last = turnAt(top + scroller.clientHeight);
      g.fillStyle = "rgba(59, 91, 219, 0.12)";
      g.fillRect(x(first) - 1, PAD.top, Math.max(2, x(last) - x(first) + 2), height - PAD.top - PAD.bottom);
      g.strokeStyle = "#212529";
      g.lineWidth = 1;
      g.beginPath();
      g.moveTo(Math.round(x(current)) + 0.5, PAD.top);
      g.lineTo(Math.round(x(current)) + 0.5, height - PAD.bottom);
      g.stroke();
    }

    canvas.addEventListener("click", (event) => {
      const rect = canvas.getBoundingClientRect();
      setCurrent(turnAtX(event.clientX - rect.left));
      scroller.focus();
    });
    canvas.addEventListener("mousemove", (event) => {
      const i = turnAtX(event.clientX - canvas.getBoundingClientRect().left);
      canvas.title = `turn ${i}: Σ ${approx}${fmt.format(cumulative[i])} tokens${index.calls[i] ? ` · ${index.calls[i]}` : ""}`;
    });
    new ResizeObserver(() => { width = -1; update(); }).observe(box);
    function update() { if (!frame) frame = requestAnimationFrame(draw); }
    return { update, turnAtX, x: (i) => x(i) };
  })();

  // ------------------------------------------------------------------ navigation

  function setCurrent(i, { scroll = true, hash = true } = {}) {
    if (!N) return;
    i = Math.max(0, Math.min(N - 1, i));
    live.get(current)?.classList.remove("current");
    current = i;
    live.get(current)?.classList.add("current");
    if (scroll) {
      anchor = { index: i, shift: -GAP };
      setTop(offsets[i] - GAP);
      render();
      // Heights above may have changed while measuring: settle once more.
      setTop(offsets[i] - GAP);
      render();
    }
    if (hash) history.replaceState(null, "", `#turn-${i}`);
    document.getElementById("position").textContent = `turn ${current} of ${N - 1}`;
    minimap.update();
  }

  function fromHash() {
    const match = /^#turn-(\d+)$/.exec(window.location.hash);
    if (match) setCurrent(Number(match[1]), { hash: false });
  }
  window.addEventListener("hashchange", fromHash);

  scroller.addEventListener("click", (event) => {
    const turn = event.target.closest(".turn");
    if (turn && !event.target.closest("a, button, summary")) setCurrent(Number(turn.dataset.index), { scroll: false });
    const link = event.target.closest("a.turn-no, a.turn-role");
    if (link) { event.preventDefault(); setCurrent(Number(link.closest(".turn").dataset.index), { scroll: false }); }
  });

  // ------------------------------------------------------------------ search

  const searchInput = document.getElementById("search-input");
  const searchStatus = document.getElementById("search-status");

  async function runSearch(q) {
    const response = await fetch(`${cfg.searchUrl}?q=${encodeURIComponent(q)}`, {
      headers: { Accept: "application/json" }, credentials: "same-origin",
    });
    const body = await response.json();
    search = { q, hits: body.turns, pos: -1, set: new Set(body.turns) };
    for (const i of [...live.keys()]) rebuild(i);
  }

  async function step(direction) {
    const q = searchInput.value.trim();
    if (!q) return;
    if (q !== search.q) await runSearch(q);
    const hits = search.hits;
    if (!hits.length) { searchStatus.textContent = "no matches"; render(); return; }
    if (search.pos === -1) {
      // Start from the current turn, the way a find bar does.
      if (direction > 0) {
        const next = hits.findIndex((h) => h >= current);
        search.pos = next === -1 ? 0 : next;
      } else {
        search.pos = lastAtOrBefore(hits, current);
      }
    } else {
      search.pos = (search.pos + direction + hits.length) % hits.length;
    }
    searchStatus.textContent = `${search.pos + 1} of ${hits.length}${hits.length >= 5000 ? "+" : ""}`;
    setCurrent(hits[search.pos]);
  }

  function lastAtOrBefore(hits, i) {
    for (let k = hits.length - 1; k >= 0; k--) if (hits[k] <= i) return k;
    return hits.length - 1;
  }

  document.getElementById("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    step(event.submitter?.id === "search-prev" ? -1 : 1);
  });
  searchInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter") { event.preventDefault(); step(event.shiftKey ? -1 : 1); }
    if (event.key === "Escape") { searchInput.blur(); scroller.focus(); }
  });
  document.getElementById("search-next").addEventListener("click", () => step(1));
  document.getElementById("search-prev").addEventListener("click", () => step(-1));

  // ------------------------------------------------------------------ jump, help, writes

  const jumpInput = document.getElementById("jump-input");
  document.getElementById("jump-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const i = Number.parseInt(jumpInput.value, 10);
    if (Number.isFinite(i)) setCurrent(i);
    jumpInput.blur();
    scroller.focus();
  });
  jumpInput.addEventListener("keydown", (event) => {
    if (event.key === "Escape") { jumpInput.blur(); scroller.focus(); }
  });

  const help = document.getElementById("help");
  document.getElementById("help-button").addEventListener("click", () => help.showModal());

  function csrf() {
    try { return JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRFToken"]; } catch (_) { return ""; }
  }

  async function post(url, data) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf() },
      body: JSON.stringify(data),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
    return body;
  }

  async function toggleNoLoss(i) {
    if (!cfg.canAnnotate) return;
    const body = await post(cfg.noLossUrl, { turn: i, no_loss: !noLoss[i] });
    noLoss[i] = body.no_loss ? 1 : 0;
    rebuild(i);
    render();
  }

  async function pinPrefix(i) {
    if (!cfg.canAnnotate) return;
    const body = await post(cfg.prefixUrl, { prefix_end: prefixEnd === i ? null : i });
    prefixEnd = body.prefix_end;
    for (const k of [...live.keys()]) rebuild(k);
    render();
  }

  // Annotations are filterable: step through the turns that carry the chosen label.
  const labelFilter = document.getElementById("label-filter");
  function stepLabel(direction) {
    const wanted = labelFilter.value;
    if (!wanted) { labelFilter.focus(); return; }
    const turns = Object.keys(annotations).map(Number)
      .filter((i) => wanted === "*" || annotations[i].some(([label]) => label === wanted)).sort((a, b) => a - b);
    if (!turns.length) return;
    const next = direction > 0 ? turns.find((i) => i > current) ?? turns[0]
      : [...turns].reverse().find((i) => i < current) ?? turns[turns.length - 1];
    setCurrent(next);
  }
  labelFilter.addEventListener("change", () => { stepLabel(1); scroller.focus(); });

  const annotate = document.getElementById("annotate");
  const annotateForm = document.getElementById("annotate-form");
  const labelSelect = document.getElementById("annotate-label");
  const note = document.getElementById("annotate-note");
  function openAnnotate() {
    if (!cfg.canAnnotate) return;
    document.getElementById("annotate-turn").textContent = `#${current}`;
    note.value = "";
    annotate.showModal();
    labelSelect.focus();
  }
  async function saveAnnotation() {
    const turn = current;
    await post(cfg.annotateUrl, { turn_index: turn, label: labelSelect.value, note: note.value });
    (annotations[turn] = annotations[turn] || []).push([labelSelect.value, note.value, "you", new Date().toISOString().slice(0, 10)]);
    rebuild(turn);
    render();
  }
  annotateForm.addEventListener("submit", (event) => {
    if (event.submitter?.value === "save") saveAnnotation();
  });
  annotate.addEventListener("keydown", (event) => {
    if (/^[1-9]$/.test(event.key) && event.target !== note) {
      const option = labelSelect.options[Number(event.key) - 1];
      if (option) labelSelect.value = option.value;
      event.preventDefault();
      // On to the note: left on the select, typed letters would pick labels by type-ahead.
      note.focus();
    } else if (event.target === labelSelect && event.key.length === 1 && !event.ctrlKey && !event.metaKey
               && !event.altKey && event.key !== " ") {
      // A letter typed on the label list is the start of a note, not a search among labels.
      note.focus();
    }
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      annotate.close();
      saveAnnotation();
    }
  });

  function review(value) {
    const form = document.getElementById("review-form");
    if (!form) return;
    const reason = document.getElementById("review-reason");
    if (value === "rejected" && !reason.value.trim()) { reason.focus(); return; }
    form.querySelector(`button[value="${value}"]`).click();
  }

  const markdownBox = document.getElementById("markdown-toggle");
  if (markdownBox) {
    markdownBox.checked = markdownMode;
    markdownBox.addEventListener("change", () => {
      if (markdownBox.checked !== markdownMode) toggleMarkdown();
      scroller.focus();
    });
  }

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target.closest("input, textarea, select, dialog[open]") || event.ctrlKey || event.metaKey || event.altKey) return;
    const actions = {
      j: () => setCurrent(current + 1),
      k: () => setCurrent(current - 1),
      "/": () => { searchInput.focus(); searchInput.select(); },
      g: () => { jumpInput.focus(); jumpInput.select(); },
      "?": () => help.showModal(),
      n: () => step(1),
      N: () => step(-1),
      e: () => toggleExpand(current),
      m: toggleMarkdown,
      a: openAnnotate,
      x: () => toggleNoLoss(current),
      p: () => pinPrefix(current),
      "]": () => stepLabel(1),
      "[": () => stepLabel(-1),
      A: () => review("accepted"),
      R: () => review("rejected"),
    };
    const action = actions[event.key];
    if (action) {
      event.preventDefault();
      followView(); // a scroll whose frame has not been drawn yet still moves the current turn first
      action();
    }
  });

  layout();
  // A deep link renders its turn first: no fetch of turns 0-99 that nobody looks at.
  if (/^#turn-\d+$/.test(window.location.hash)) fromHash();
  else render();
  window.trajectoryViewer = { setCurrent, get current() { return current; }, live, minimap };
})();
