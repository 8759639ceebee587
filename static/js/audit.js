/* Judge audit: side-by-side grid, filters and keyboard-first human grading.
 *
 * Stable hooks for end-to-end tests (data-testid):
 *   audit-grid          the table (data-ready="1" once this script has run); each node is a tr[data-testid=audit-row] with data-index,
 *                       data-leaf (1/0), data-category, data-disagree, data-invalid, data-assigned;
 *                       the current leaf row has class "current" and aria-selected="true"
 *   disagree-below      on inner nodes: "k/n disagree" (leaves below where the sources differ)
 *   source-N / root-N   column header N and its aggregated root score
 *   my-cell             the signed-in user's own human grade cell in a leaf row
 *                       (inside: [data-role=score], [data-role=pending], [data-role=note], [data-role=who])
 *   filter-disagree, filter-invalid, filter-queue (checkboxes), filter-category, filter-subtree (selects),
 *   visible-count       how many rows the filters leave visible
 *   grade-bar, current-leaf, pending-score, note-input, save-button, grade-status
 *   show-prompt         per judge cell: loads the prompt and answer into leaf-panel
 *   export-csv, export-json, pair-metrics, queue-create
 * Keys: j / ArrowDown next leaf, k / ArrowUp previous, 0 / 1 score, n note (after any note already
 * there, on a line of its own), Enter save and next, s skip to the next leaf still without your grade
 * (of your queue leaves, in a queue), u undo your last save on this page, Escape leaves the note field.
 * Keys are ignored while typing in another input. After each save or undo the agreement table
 * (#pair-metrics-box) is read again from the server.
 */
(() => {
  "use strict";
  const grid = document.getElementById("audit-grid");
  if (!grid) return;
  const config = JSON.parse(document.getElementById("audit-config").textContent);
  const rows = Array.from(grid.querySelectorAll("tr[data-testid=audit-row]"));
  const byIndex = new Map(rows.map((r) => [Number(r.dataset.index), r]));
  const $ = (id) => document.getElementById(id);
  const note = $("note-input");
  const status = $("grade-status");
  let current = null;
  let pending = null;
  const undoStack = []; // {row, saved: {score, note}, previous: {score, note} | null}

  // ---------------------------------------------------------------- filters
  const filters = {
    disagree: $("filter-disagree"), invalid: $("filter-invalid"), queue: $("filter-queue"),
    category: $("filter-category"), subtree: $("filter-subtree"),
  };

  function subtreeRange(index) {
    // Pre-order: a node's subtree is the run of rows after it that are deeper than it.
    const start = rows.indexOf(byIndex.get(index));
    const depth = Number(rows[start].dataset.depth);
    let end = start + 1;
    while (end < rows.length && Number(rows[end].dataset.depth) > depth) end += 1;
    return [start, end];
  }

  function applyFilters() {
    const onlyDisagree = filters.disagree?.checked;
    const onlyInvalid = filters.invalid?.checked;
    const onlyQueue = filters.queue?.checked;
    const category = filters.category?.value || "";
    const [from, to] = filters.subtree?.value ? subtreeRange(Number(filters.subtree.value)) : [0, rows.length];
    const leafFilter = onlyDisagree || onlyInvalid || onlyQueue || category;
    const visible = rows.map((row, i) => {
      if (i < from || i >= to) return false;
      if (row.dataset.leaf !== "1") return !leafFilter;
      return !(onlyDisagree && row.dataset.disagree !== "1") && !(onlyInvalid && row.dataset.invalid !== "1")
        && !(onlyQueue && row.dataset.assigned !== "1") && !(category && row.dataset.category !== category);
    });
    // Inner nodes stay visible above the leaves they hold, so a filtered leaf keeps its context.
    if (leafFilter) {
      const depthStack = [];
      rows.forEach((row, i) => {
        const depth = Number(row.dataset.depth);
        while (depthStack.length && Number(rows[depthStack[depthStack.length - 1]].dataset.depth) >= depth) depthStack.pop();
        if (visible[i] && row.dataset.leaf === "1") depthStack.forEach((k) => { if (k >= from && k < to) visible[k] = true; });
        if (row.dataset.leaf !== "1") depthStack.push(i);
      });
    }
    let shown = 0;
    rows.forEach((row, i) => { row.hidden = !visible[i]; if (visible[i]) shown += 1; });
    $("visible-count").textContent = String(shown);
    if (current && current.hidden) select(visibleLeaves()[0] || null);
  }
  // After a filter change the keys go back to the grid at once.
  Object.values(filters).forEach((el) => el?.addEventListener("change", () => { applyFilters(); el.blur(); }));

  // ---------------------------------------------------------------- selection
  const visibleLeaves = () => rows.filter((r) => r.dataset.leaf === "1" && !r.hidden);
  const myCell = (row) => row?.querySelector("[data-testid=my-cell]");

  function select(row) {
    if (current) { current.classList.remove("current"); current.removeAttribute("aria-selected"); }
    current = row;
    pending = null;
    if (!row) { if ($("current-leaf")) $("current-leaf").textContent = "No leaf shown."; return; }
    row.classList.add("current");
    row.setAttribute("aria-selected", "true");
    row.scrollIntoView({ block: "nearest" });
    if (!config.canGrade) return;
    $("current-leaf").textContent = row.querySelector(".req").textContent.trim();
    const cell = myCell(row);
    const saved = cell?.querySelector("[data-role=score]")?.textContent.trim();
    $("pending-score").textContent = saved === "0" || saved === "1" ? `${saved} (saved)` : "—";
    note.value = cell?.querySelector("[data-role=note]")?.getAttribute("title") || cell?.querySelector("[data-role=note]")?.textContent.trim() || "";
    status.textContent = "";
  }

  function move(step) {
    const leaves = visibleLeaves();
    if (!leaves.length) return;
    const at = leaves.indexOf(current);
    const next = at < 0 ? (step > 0 ? leaves[0] : leaves[leaves.length - 1])
      : leaves[Math.min(leaves.length - 1, Math.max(0, at + step))];
    select(next);
  }

  grid.addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-testid=audit-row]");
    if (row && row.dataset.leaf === "1" && !event.target.closest("button, a")) select(row);
  });

  // ---------------------------------------------------------------- grading
  function setPending(score) {
    if (!current) return;
    pending = score;
    $("pending-score").textContent = String(score);
    const mark = myCell(current)?.querySelector("[data-role=pending]");
    if (mark) mark.textContent = `→ ${score}`;
  }

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"];
  }

  // Save and go on at once: the grade is sent in the background, so a quick "1 Enter 1 Enter"
  // grades two leaves (waiting for the answer sent the second key to the first leaf again).
  async function save() {
    if (!current || !config.canGrade) return;
    const row = current;
    const cell = myCell(row);
    const saved = cell?.querySelector("[data-role=score]")?.textContent.trim();
    const score = pending !== null ? pending : (saved === "0" || saved === "1" ? Number(saved) : null);
    if (score === null) { status.textContent = "Press 0 or 1 first."; return; }
    const previous = saved === "0" || saved === "1" ? { score: Number(saved), note: savedNote(row) } : null;
    const body = JSON.stringify({ run: config.baseRun, node_index: Number(row.dataset.index), score, note: note.value.trimEnd() });
    const mark = cell?.querySelector("[data-role=pending]");
    if (mark) mark.textContent = `→ ${score} saving…`;
    note.blur();
    move(1);
    status.textContent = `Saving ${leafNumber(row)}…`;
    let response;
    try {
      response = await fetch(config.gradeUrl, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(), Accept: "application/json" },
        body,
      });
    } catch (err) {
      notSaved(row, score, String(err));
      return;
    }
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) { notSaved(row, score, JSON.stringify(answer.detail || answer)); return; }
    showSaved(row, answer);
    undoStack.push({ row, saved: { score: answer.score, note: answer.note }, previous });
    refreshMetricsSoon();
    status.textContent = `Saved ${leafNumber(row)}: ${answer.score} (u: undo)`;
    if (row === current && document.activeElement !== note) note.value = answer.note;
  }

  function notSaved(row, score, why) {
    const mark = myCell(row)?.querySelector("[data-role=pending]");
    if (mark) mark.textContent = `→ ${score} not saved`;
    status.textContent = `Not saved ${leafNumber(row)}: ${why}`;
  }

  const leafNumber = (row) => row.querySelector(".req .muted").textContent;
  function savedNote(row) {
    const el = myCell(row)?.querySelector("[data-role=note]");
    return el?.getAttribute("title") ?? el?.textContent.trim() ?? "";
  }

  // Undo the last save made on this page: the grade before it comes back, or none (the leaf is
  // open again in your queues). The server refuses if the grade changed since (another tab).
  async function undoLast() {
    const last = undoStack.pop();
    if (!last) { status.textContent = "Nothing to undo."; return; }
    const { row } = last;
    status.textContent = "Undoing…";
    const response = await fetch(config.undoUrl, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(), Accept: "application/json" },
      body: JSON.stringify({ run: config.baseRun, node_index: Number(row.dataset.index), saved: last.saved, previous: last.previous }),
    }).catch((err) => ({ ok: false, status: 0, json: async () => ({ detail: String(err) }) }));
    const body = await response.json().catch(() => ({}));
    if (!response.ok) { status.textContent = `Not undone: ${body.detail || JSON.stringify(body)}`; return; }
    if (body.removed) showRemoved(row, body.root_score); else showSaved(row, body);
    refreshMetricsSoon();
    select(row);
    status.textContent = body.removed ? `Undone: ${leafNumber(row)} has no grade of yours again.` : `Undone: ${leafNumber(row)} is back to ${body.score}.`;
  }

  function showRemoved(row, rootScore) {
    const cell = myCell(row);
    if (!cell) return;
    const scoreEl = cell.querySelector("[data-role=score]");
    scoreEl.textContent = "—";
    scoreEl.className = "score none";
    cell.querySelector("[data-role=pending]").textContent = "";
    const noteEl = cell.querySelector("[data-role=note]");
    noteEl.textContent = "";
    noteEl.removeAttribute("title");
    cell.querySelector("[data-role=who]").textContent = "";
    updateMine(rootScore);
  }

  // Skip: on to the next leaf that still waits for your grade (in a queue, for one of your leaves).
  function skip() {
    const leaves = visibleLeaves();
    const inQueue = filters.queue !== null && filters.queue !== undefined;
    const waiting = (row) => !["0", "1"].includes(myCell(row)?.querySelector("[data-role=score]")?.textContent.trim())
      && (!inQueue || row.dataset.assigned === "1");
    const at = leaves.indexOf(current);
    const next = [...leaves.slice(at + 1), ...leaves.slice(0, Math.max(at, 0))].find(waiting);
    const from = current;
    if (!next) { status.textContent = "No other leaf waits for your grade."; return; }
    select(next);
    if (from) status.textContent = `Skipped ${leafNumber(from)}: still without your grade.`;
  }

  // The agreement table from the server, once grading pauses (a big tree takes a moment to compare).
  let metricsTimer = null;
  function refreshMetricsSoon() {
    clearTimeout(metricsTimer);
    metricsTimer = setTimeout(async () => {
      const box = $("pair-metrics-box");
      const response = await fetch(config.metricsUrl, { credentials: "same-origin" }).catch(() => null);
      if (!box || !response?.ok) return;
      const wasOpen = $("pair-metrics")?.open ?? true;
      box.innerHTML = await response.text();
      if ($("pair-metrics")) $("pair-metrics").open = wasOpen;
    }, 400);
  }

  function showSaved(row, grade) {
    const cell = myCell(row);
    if (!cell) return;
    const scoreEl = cell.querySelector("[data-role=score]");
    const value = String(Math.round(grade.score));
    scoreEl.textContent = value;
    scoreEl.className = `score s${value}`;
    cell.querySelector("[data-role=pending]").textContent = "";
    const noteEl = cell.querySelector("[data-role=note]");
    noteEl.textContent = grade.note.length > 160 ? `${grade.note.slice(0, 159)}…` : grade.note;
    noteEl.setAttribute("title", grade.note);
    cell.querySelector("[data-role=who]").textContent = `${grade.graded_by} · ${grade.graded_at.slice(0, 16).replace("T", " ")}`;
    updateMine(grade.root_score);
    row.classList.add("flash");
    setTimeout(() => row.classList.remove("flash"), 1000);
  }

  function updateMine(rootScore) {
    if ($("mine-root")) $("mine-root").textContent = Number(rootScore).toFixed(3);
    if ($("mine-graded")) {
      const graded = rows.filter((r) => ["0", "1"].includes(myCell(r)?.querySelector("[data-role=score]")?.textContent.trim())).length;
      $("mine-graded").textContent = String(graded);
    }
  }

  // `n`: the note field, with the caret after the note already there, on a line of its own.
  function openNote() {
    if (note.value && !note.value.endsWith("\n")) note.value += "\n";
    note.focus();
    note.setSelectionRange(note.value.length, note.value.length);
  }

  $("save-button")?.addEventListener("click", save);

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target === note) {
      if (event.key === "Escape") { note.blur(); event.preventDefault(); }
      else if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); save(); }
      return;
    }
    if (target.closest?.("input, textarea, select, [contenteditable]")) return;
    switch (event.key) {
      case "j": case "ArrowDown": move(1); break;
      case "k": case "ArrowUp": move(-1); break;
      case "0": case "1": if (config.canGrade) setPending(Number(event.key)); else return; break;
      case "n": if (config.canGrade && current) openNote(); else return; break;
      case "Enter": if (config.canGrade && current) save(); else return; break;
      case "s": if (config.canGrade) skip(); else return; break;
      case "u": if (config.canGrade) undoLast(); else return; break;
      default: return;
    }
    event.preventDefault();
  });

  // The prompt panel: name the leaf the loaded prompt belongs to.
  grid.addEventListener("click", (event) => {
    const button = event.target.closest("[data-testid=show-prompt]");
    if (button) $("leaf-panel-title").textContent = button.dataset.panelTitle;
  });

  applyFilters();
  // ?leaf=N (a queue page's link) starts on that leaf.
  if (config.startLeaf !== null && byIndex.has(config.startLeaf)) {
    const start = byIndex.get(config.startLeaf);
    if (start.hidden && filters.queue) { filters.queue.checked = false; applyFilters(); }
    select(start);
  }
  grid.dataset.ready = "1";
})();
