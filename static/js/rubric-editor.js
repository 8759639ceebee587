// Rubric tree editor: lazy tree view, node-by-node edits with optimistic concurrency, undo/redo.
//
// The whole draft arrives once through json_script; after that each action sends one small
// request (PATCH one node, POST one subtree, DELETE, move) and patches only the DOM rows it
// touches. Only expanded children exist in the DOM, so a 2,000-node tree stays light.
// Validation stays on the server (one implementation): the page re-reads /problems/ after edits.
// So do effective weights: every answer to a change of weights or shape carries each node's share.
// Actions run one after another, in the order they were asked for (see run/write): an edit reads the
// node versions its predecessors left, so one tab never conflicts with itself.
// All text from the tree goes through textContent, never innerHTML.

const root = document.getElementById("rubric-editor");
if (root) start(root);

function start(root) {
  "use strict";
  const data = JSON.parse(document.getElementById("rubric-data").textContent);
  const paperPk = data.paper.pk;
  const canEdit = Boolean(data.canEdit);
  const $ = (id) => document.getElementById(id);
  const treeEl = $("rx-tree");
  const panel = $("rx-panel");
  const statusEl = $("rx-status");
  const csrf = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
  const EXPANDED_KEY = `rx-expanded-${paperPk}`;
  const UNDO_KEY = `rx-undo-${paperPk}`;

  // --- model -------------------------------------------------------------------------------
  /** pk -> node {pk, parent, version, id, requirements, weight, task_category, finegrained_task_category, share, children} */
  const nodes = new Map();
  let rootPk = null;
  for (const n of data.nodes) {
    nodes.set(n.pk, { ...n, children: [] });
    if (n.parent === null) rootPk = n.pk;
  }
  // Pre-order input, so appending keeps sibling order.
  for (const n of data.nodes) if (n.parent !== null) nodes.get(n.parent).children.push(n.pk);

  let problems = new Map(); // pk -> [problem]
  let problemList = []; // the server's order (pre-order), for the problems panel and `e`
  setProblems(data.problems);

  const expanded = new Set(loadJSON(localStorage, EXPANDED_KEY, null) ?? [rootPk]);
  let selected = rootPk;
  let cutPk = null;
  let filter = { text: "", category: "" };
  let visibleInFilter = null; // Set of pks while a search/filter is active
  const rows = new Map(); // pk -> treeitem element (only rendered nodes)
  let history = loadJSON(sessionStorage, UNDO_KEY, { undo: [], redo: [] });
  // A restore or re-import replaces the draft (new rows, new root): old undo steps no longer apply.
  if (history.root !== rootPk) history = { root: rootPk, undo: [], redo: [] };

  function loadJSON(store, key, fallback) {
    try {
      const raw = store.getItem(key);
      return raw ? JSON.parse(raw) : fallback;
    } catch {
      return fallback;
    }
  }
  function saveExpanded() {
    localStorage.setItem(EXPANDED_KEY, JSON.stringify([...expanded].filter((pk) => nodes.has(pk))));
  }
  function saveHistory() {
    // Bounded, so a long session cannot fill sessionStorage.
    history.undo = history.undo.slice(-200);
    sessionStorage.setItem(UNDO_KEY, JSON.stringify(history));
    const u = $("rx-undo"), r = $("rx-redo");
    if (u) u.disabled = history.undo.length === 0;
    if (r) r.disabled = history.redo.length === 0;
  }
  function setProblems(list) {
    problemList = list;
    problems = new Map();
    for (const p of list) {
      const key = p.node ?? rootPk;
      if (!problems.has(key)) problems.set(key, []);
      problems.get(key).push(p);
    }
  }
  function isLeaf(pk) {
    return nodes.get(pk).children.length === 0;
  }
  function depthOf(pk) {
    let d = 0;
    for (let p = nodes.get(pk).parent; p !== null; p = nodes.get(p).parent) d++;
    return d;
  }
  function ancestors(pk) {
    const out = [];
    for (let p = nodes.get(pk).parent; p !== null; p = nodes.get(p).parent) out.push(p);
    return out;
  }
  // Shares of the root score as the server computes them (scoring.shares), from a write's answer.
  function applyShares(shares) {
    if (!shares) return;
    for (const [pk, share] of Object.entries(shares)) {
      const n = nodes.get(Number(pk));
      if (n) n.share = share;
    }
  }

  // --- rendering ---------------------------------------------------------------------------
  const categoryClass = (c) => (c ? "cat-" + c.toLowerCase().replace(/[^a-z]+/g, "-") : "");

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function formatShare(share) {
    if (share === null || share === undefined) return "";
    const pct = share * 100;
    return (pct >= 10 ? pct.toFixed(1) : pct >= 0.1 ? pct.toFixed(2) : pct.toFixed(3)) + "%";
  }

  function makeItem(pk) {
    const n = nodes.get(pk);
    const item = el("div", "rx-item");
    item.setAttribute("role", "treeitem");
    item.dataset.pk = pk;
    item.id = "rx-node-" + pk;
    item.setAttribute("aria-selected", String(pk === selected));
    const row = el("div", "rx-row");
    row.style.setProperty("--depth", depthOf(pk));
    if (canEdit && pk !== rootPk) row.draggable = true;
    item.append(row);
    fillRow(row, n);
    rows.set(pk, item);
    if (!isLeaf(pk) && isOpen(pk)) item.append(renderChildren(pk));
    item.setAttribute("aria-expanded", isLeaf(pk) ? "" : String(isOpen(pk)));
    if (pk === selected) row.classList.add("selected");
    if (pk === cutPk) row.classList.add("cut");
    return item;
  }
  function isOpen(pk) {
    return visibleInFilter ? true : expanded.has(pk);
  }
  function renderChildren(pk) {
    const box = el("div", "rx-children");
    box.setAttribute("role", "group");
    const kids = nodes.get(pk).children.filter((c) => !visibleInFilter || visibleInFilter.has(c));
    box.append(...kids.map(makeItem));
    return box;
  }
  function fillRow(row, n) {
    // A row being edited inline keeps its editor (and the focus); it is redrawn when the edit ends.
    if (row.querySelector(":scope > .rx-inline")) return;
    const leaf = isLeaf(n.pk);
    const toggle = el("span", "rx-toggle", leaf ? "•" : isOpen(n.pk) ? "▾" : "▸");
    toggle.dataset.action = "toggle";
    const req = el("span", "rx-req", n.requirements || "(empty requirements)");
    if (!n.requirements) req.classList.add("rx-empty");
    const weight = el("span", "rx-weight", "w " + n.weight);
    weight.title = "Weight among its siblings";
    const share = el("span", "rx-share", formatShare(n.share));
    share.title = "Effective weight: this node's share of the root score";
    const parts = [toggle, req, weight];
    if (n.task_category) parts.push(el("span", "rx-cat " + categoryClass(n.task_category), n.task_category));
    if (n.finegrained_task_category) parts.push(el("span", "rx-fine", n.finegrained_task_category));
    if (!leaf) parts.push(el("span", "rx-count", String(n.children.length)));
    parts.push(share);
    const own = problems.get(n.pk);
    if (own) {
      const warn = el("span", "rx-warn " + (own.some((p) => p.level === "error") ? "rx-error" : ""), "⚠ " + own.length);
      warn.title = own.map((p) => p.message).join("\n");
      parts.push(warn);
    }
    row.replaceChildren(...parts);
  }
  function refreshRow(pk) {
    const item = rows.get(pk);
    if (item && nodes.has(pk)) fillRow(item.firstChild, nodes.get(pk));
  }
  function refreshAllRows() {
    for (const [pk, item] of rows) if (item.isConnected && nodes.has(pk)) fillRow(item.firstChild, nodes.get(pk));
  }
  // Re-render one node's children in place (after add, delete or move under it).
  function rerenderChildren(pk) {
    const item = rows.get(pk);
    if (!item || !item.isConnected) return;
    const old = item.querySelector(":scope > .rx-children");
    if (old) old.remove();
    if (!isLeaf(pk) && isOpen(pk)) item.append(renderChildren(pk));
    item.setAttribute("aria-expanded", isLeaf(pk) ? "" : String(isOpen(pk)));
    fillRow(item.firstChild, nodes.get(pk));
  }
  function renderAll() {
    rows.clear();
    treeEl.replaceChildren(makeItem(rootPk));
    renderStats();
  }
  function renderStats() {
    const counts = {};
    let leaves = 0;
    for (const n of nodes.values()) {
      if (n.children.length) continue;
      leaves++;
      const c = n.task_category || "(none)";
      counts[c] = (counts[c] || 0) + 1;
    }
    const stats = $("rx-stats");
    const parts = [el("span", "", `${nodes.size} nodes · ${leaves} leaves`)];
    for (const [c, k] of Object.entries(counts).sort()) parts.push(el("span", "rx-cat " + categoryClass(c), `${c}: ${k}`));
    let errors = 0, warnings = 0;
    for (const list of problems.values()) for (const p of list) p.level === "error" ? errors++ : warnings++;
    if (errors || warnings) {
      const badge = el("button", errors ? "rx-warn rx-error rx-badge" : "rx-warn rx-badge", `⚠ ${errors} error${errors === 1 ? "" : "s"}, ${warnings} warning${warnings === 1 ? "" : "s"}`);
      badge.type = "button";
      badge.id = "rx-problems-toggle";
      badge.title = "List the problems, each with a link to its node (e: next problem)";
      badge.setAttribute("aria-controls", "rx-problems");
      badge.setAttribute("aria-expanded", String(!problemsPanel.hidden));
      badge.addEventListener("click", () => showProblems(problemsPanel.hidden));
      parts.push(badge);
    }
    stats.replaceChildren(...parts);
    renderProblems();
  }

  // --- the problems panel: every problem of the draft, each a link to its node ----------------
  const problemsPanel = $("rx-problems");
  function showProblems(open) {
    problemsPanel.hidden = !open || problemList.length === 0;
    $("rx-problems-toggle")?.setAttribute("aria-expanded", String(!problemsPanel.hidden));
  }
  function renderProblems() {
    if (problemList.length === 0) problemsPanel.hidden = true;
    const list = $("rx-problem-list");
    list.replaceChildren(...problemList.map((p) => {
      const pk = p.node ?? rootPk;
      const item = el("li", "problem-" + p.level);
      const n = nodes.get(pk);
      const link = el("button", "link-button", n ? `${pathLabel(pk)} ${shortText(n.requirements)}` : p.path);
      link.type = "button";
      link.dataset.pk = pk;
      link.title = p.path;
      item.append(link, document.createTextNode(": " + p.message));
      return item;
    }));
  }
  $("rx-problem-list").addEventListener("click", (e) => {
    const pk = Number(e.target.closest("[data-pk]")?.dataset.pk);
    if (!nodes.has(pk)) return;
    select(pk);
    treeEl.focus({ preventScroll: true });
  });
  function nextProblem() {
    if (!problemList.length) { say("No problems in this draft"); return; }
    const order = problemList.map((p) => p.node ?? rootPk).filter((pk, i, all) => nodes.has(pk) && all.indexOf(pk) === i);
    const at = order.indexOf(selected);
    select(order[(at + 1) % order.length]);
    const own = problems.get(selected) || [];
    say(own.map((p) => p.message).join("; "));
  }

  // --- selection and the side panel ----------------------------------------------------------
  function select(pk, { scroll = true } = {}) {
    if (!nodes.has(pk)) pk = rootPk;
    rows.get(selected)?.firstChild.classList.remove("selected");
    rows.get(selected)?.setAttribute("aria-selected", "false");
    selected = pk;
    if (!rows.get(pk)?.isConnected) revealNode(pk);
    const row = rows.get(pk)?.firstChild;
    if (row) {
      row.classList.add("selected");
      row.parentElement.setAttribute("aria-selected", "true");
      treeEl.setAttribute("aria-activedescendant", "rx-node-" + pk);
      if (scroll) row.scrollIntoView({ block: "nearest" });
    }
    renderPanel();
  }
  function revealNode(pk) {
    let changed = false;
    for (const a of ancestors(pk)) if (!expanded.has(a)) { expanded.add(a); changed = true; }
    if (changed) { saveExpanded(); renderAll(); }
  }
  function shortText(text, limit = 60) {
    if (!text) return "(empty requirements)";
    return text.length > limit ? text.slice(0, limit - 1) + "…" : text;
  }
  function renderPanel() {
    const n = nodes.get(selected);
    if (!n) { panel.replaceChildren(); return; }
    // A redraw (after a save, a problems refresh) must not take away a field being typed in.
    const active = panel.contains(document.activeElement) && panel.dataset.pk === String(n.pk) ? document.activeElement : null;
    const typing = active && active.id && "value" in active
      ? { id: active.id, value: active.value, start: active.selectionStart, end: active.selectionEnd } : null;
    const parts = [el("h2", "", pathLabel(selected))];
    const meta = el("dl", "meta");
    meta.append(el("dt", "", "Id"), el("dd", "rx-id", n.id));
    meta.append(el("dt", "", "Effective weight"), el("dd", "", formatShare(n.share)));
    meta.append(el("dt", "", "Version"), el("dd", "", n.version));
    parts.push(meta);
    const form = el("form", "rx-form");
    form.addEventListener("submit", (e) => e.preventDefault());
    const req = el("textarea");
    req.id = "rx-field-requirements";
    req.rows = 5;
    req.value = n.requirements;
    const weight = el("input");
    weight.id = "rx-field-weight";
    weight.type = "number";
    weight.min = "0";
    weight.step = "any";
    weight.value = n.weight;
    const cat = selectBox("rx-field-category", ["", ...data.categories], n.task_category || "");
    const fine = selectBox("rx-field-finegrained", ["", ...data.finegrained], n.finegrained_task_category || "");
    for (const [label, input] of [["Requirements", req], ["Weight", weight], ["Category", cat], ["Fine-grained category", fine]]) {
      const l = el("label", "", label);
      l.htmlFor = input.id;
      input.disabled = !canEdit;
      form.append(l, input);
    }
    req.addEventListener("change", () => write(() => saveFields(n.pk, { requirements: req.value })));
    weight.addEventListener("change", () => {
      const w = Number(weight.value);
      if (weight.value === "" || !Number.isFinite(w) || w < 0) { say("Weight must be a number ≥ 0", true); weight.value = n.weight; return; }
      write(() => saveFields(n.pk, { weight: w }));
    });
    cat.addEventListener("change", () => write(() => saveFields(n.pk, { task_category: cat.value || null })));
    fine.addEventListener("change", () => write(() => saveFields(n.pk, { finegrained_task_category: fine.value || null })));
    parts.push(form);
    if (canEdit) {
      const actions = el("div", "rx-actions");
      for (const [label, fn, key] of [["Add child", () => addNode(selected, "child"), "a"], ["Add sibling", () => addNode(selected, "sibling"), "s"],
        ["Duplicate", () => duplicate(selected), "d"], ["Cut", () => cut(selected), "x"], ["Paste into", () => paste(selected, false), "v"],
        ["Move up", () => reorder(selected, -1), "Alt+↑"], ["Move down", () => reorder(selected, 1), "Alt+↓"],
        ["Delete", () => removeNode(selected), "Del"]]) {
        const b = el("button", label === "Delete" ? "danger" : "", label);
        b.type = "button";
        b.title = `Shortcut: ${key}`;
        b.addEventListener("click", () => write(fn));
        if (n.pk === rootPk && !["Add child", "Paste into"].includes(label)) b.disabled = true;
        if (label === "Paste into" && cutPk === null) b.disabled = true;
        actions.append(b);
      }
      parts.push(actions);
      if (!isLeaf(n.pk)) parts.push(bulkForm(n.pk));
    }
    const own = problems.get(n.pk) || [];
    if (own.length) {
      const list = el("ul", "rx-problems");
      for (const p of own) list.append(el("li", "problem-" + p.level, p.message));
      parts.push(list);
    }
    panel.replaceChildren(...parts);
    panel.dataset.pk = n.pk;
    const again = typing && $(typing.id);
    if (again && !again.disabled) {
      again.value = typing.value;
      again.focus();
      if (typing.start !== null && typing.start !== undefined) again.setSelectionRange(typing.start, typing.end);
    }
  }
  // Bulk category edit: every leaf below a node at once, as one undo step.
  function bulkForm(pk) {
    const leaves = subtreePks(pk).filter((p) => p !== pk && isLeaf(p));
    const box = el("fieldset", "rx-bulk");
    box.append(el("legend", "", `The ${leaves.length} lea${leaves.length === 1 ? "f" : "ves"} below`));
    const cat = selectBox("rx-bulk-category", ["", ...data.categories], "");
    cat.options[0].textContent = "(category unchanged)";
    const fine = selectBox("rx-bulk-finegrained", ["", "(none)", ...data.finegrained], "");
    fine.options[0].textContent = "(fine-grained unchanged)";
    const apply = el("button", "", "Set for all of them");
    apply.type = "button";
    apply.id = "rx-bulk-apply";
    apply.addEventListener("click", () => {
      const changes = {};
      if (cat.value) changes.task_category = cat.value;
      if (fine.value) changes.finegrained_task_category = fine.value === "(none)" ? null : fine.value;
      if (!Object.keys(changes).length) { say("Pick a category to set", true); return; }
      write(() => setLeafCategories(pk, changes));
    });
    cat.setAttribute("aria-label", "Category for every leaf below");
    fine.setAttribute("aria-label", "Fine-grained category for every leaf below");
    box.append(cat, fine, apply);
    return box;
  }
  function selectBox(id, options, value) {
    const s = el("select");
    s.id = id;
    for (const o of options) {
      const opt = el("option", "", o || "(none)");
      opt.value = o;
      if (o === value) opt.selected = true;
      s.append(opt);
    }
    return s;
  }
  function pathLabel(pk) {
    const chain = [pk, ...ancestors(pk)].reverse();
    const nums = [];
    for (let i = 1; i < chain.length; i++) nums.push(nodes.get(chain[i - 1]).children.indexOf(chain[i]) + 1);
    return nums.length ? `Node ${nums.join(".")}` : "Root";
  }

  // --- server calls ------------------------------------------------------------------------
  function say(text, bad = false) {
    statusEl.textContent = text;
    statusEl.classList.toggle("error", bad);
  }
  // Others' changes: poll a cheap fingerprint of the draft; our own writes update the one we
  // expect (through the problems refresh that follows every write), so only theirs show.
  let stamp = data.stamp;
  let writes = 0;
  let stampStale = false;
  setInterval(async () => {
    if (replaced || writes || stampStale || document.visibilityState !== "visible") return;
    const r = await api("GET", `/api/papers/${paperPk}/stamp/`);
    if (!r.ok) return;
    if (r.json.root !== rootPk) draftGone();
    else if (!writes && !stampStale && r.json.stamp !== stamp) $("rx-remote").hidden = false;
  }, 10000);

  // The whole draft was replaced (a version restored, a file imported) under this page: its rows
  // are gone, so no edit made here can be saved. Say so once, keep what could not be saved, stop.
  let replaced = false;
  function draftGone(unsaved) {
    replaced = true;
    $("rx-remote").hidden = true;
    $("rx-replaced").hidden = false;
    const text = unsaved?.requirements;
    if (text) {
      $("rx-replaced-text").value = text;
      $("rx-replaced-unsaved").hidden = false;
    }
    say("Not saved: the draft was replaced. Reload to continue.", true);
  }
  async function api(method, url, body) {
    if (method !== "GET") { writes++; stampStale = true; }
    try {
      return await request(method, url, body);
    } finally {
      if (method !== "GET") writes--;
    }
  }
  async function request(method, url, body) {
    const response = await fetch(url, {
      method,
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf, Accept: "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    let json = null;
    try { json = await response.json(); } catch { json = null; }
    return { status: response.status, ok: response.ok, json };
  }
  let problemsTimer = null;
  function refreshProblemsSoon() {
    clearTimeout(problemsTimer);
    problemsTimer = setTimeout(refreshProblems, 300);
  }
  async function refreshProblems() {
    clearTimeout(problemsTimer);
    const r = await api("GET", `/api/papers/${paperPk}/problems/`);
    if (!r.ok) return;
    if (!writes) { stamp = r.json.stamp; stampStale = false; }
    setProblems(r.json.problems);
    refreshAllRows();
    renderStats();
    renderPanel();
  }

  // One line of actions: each starts when the one before has finished, so it reads the versions
  // (and the selection) its predecessors left. When nothing is waiting, a step that is not a
  // write (a move of the selection) happens at once.
  let line = Promise.resolve();
  let waiting = 0;
  function run(step) {
    const go = () => step();
    if (waiting === 0) {
      const result = go();
      if (!(result instanceof Promise)) return Promise.resolve(result);
      return enqueue(() => result);
    }
    return enqueue(go);
  }
  function enqueue(step) {
    waiting++;
    line = line.then(step).catch((err) => say(`Failed: ${err}`, true)).finally(() => { waiting--; });
    return line;
  }
  function write(step) {
    if (!canEdit) return Promise.resolve();
    return run(() => (replaced ? say("Not saved: the draft was replaced. Reload to continue.", true) : step()));
  }
  async function failed(r, what, unsaved) {
    if (r.status === 404) {
      // Deleted by someone else, or the whole draft replaced: the stamp tells which.
      const now = await api("GET", `/api/papers/${paperPk}/stamp/`);
      if (now.ok && now.json.root !== rootPk) { draftGone(unsaved); return; }
      say(`${what}: this node no longer exists (someone deleted it). Reload the page.`, true);
    } else say(`${what} failed: ${r.json?.detail || "HTTP " + r.status}`, true);
  }
  function applyNode(json) {
    const n = nodes.get(json.pk);
    if (!n) return;
    for (const k of ["version", "requirements", "weight", "task_category", "finegrained_task_category"]) n[k] = json[k];
  }

  // Edits: one PATCH carrying the version we read; 409 opens the merge dialog.
  async function saveFields(pk, changes, { record = true } = {}) {
    const n = nodes.get(pk);
    if (!n) return false;
    const before = {};
    for (const k of Object.keys(changes)) before[k] = n[k];
    if (Object.keys(changes).every((k) => changes[k] === n[k])) return true;
    say("Saving…");
    const r = await api("PATCH", `/api/rubric-nodes/${pk}/`, { version: n.version, ...changes });
    if (r.status === 409) return resolveConflict(pk, changes, r.json.current, record, before);
    if (!r.ok) { await failed(r, "Saving", changes); renderPanel(); return false; }
    applyNode(r.json);
    applyShares(r.json.shares);
    if (record) pushUndo({ type: "edit", pk, before, after: { ...changes } });
    afterChange([pk], "weight" in changes);
    say("Saved");
    return true;
  }
  function afterChange(pks, sharesChanged) {
    if (sharesChanged) refreshAllRows(); else pks.forEach(refreshRow);
    renderPanel();
    renderStats();
    refreshProblemsSoon();
  }

  const conflictDialog = $("rx-conflict");
  function resolveConflict(pk, changes, current, record, before) {
    applyNode(current);
    refreshRow(pk);
    const fmt = (obj) => Object.keys(changes).map((k) => `${k}: ${obj[k] ?? "(none)"}`).join("\n");
    $("rx-conflict-theirs").textContent = fmt(current);
    $("rx-conflict-mine").textContent = fmt(changes);
    const merged = $("rx-conflict-merged");
    const textual = "requirements" in changes;
    merged.value = textual ? `${current.requirements}\n${changes.requirements}` : "";
    merged.disabled = !textual;
    conflictDialog.querySelector('[data-choice="merge"]').disabled = !textual;
    return new Promise((resolve) => {
      const onClick = async (event) => {
        const choice = event.target.dataset?.choice;
        if (!choice) return;
        conflictDialog.removeEventListener("click", onClick);
        conflictDialog.close();
        if (choice === "theirs") { say("Kept their version"); renderPanel(); resolve(false); return; }
        const next = choice === "merge" ? { ...changes, requirements: merged.value } : changes;
        const ok = await saveFields(pk, next, { record: false });
        if (ok && record) pushUndo({ type: "edit", pk, before: { ...before }, after: { ...next } });
        resolve(ok);
      };
      conflictDialog.addEventListener("click", onClick);
      conflictDialog.showModal();
    });
  }

  function insertRows(list) {
    // Rows arrive in pre-order: the subtree root first, its parent already known.
    for (const r of list) nodes.set(r.pk, { ...r, children: [], share: 0 });
    const top = list[0];
    const byParent = new Map();
    for (const r of list.slice(1)) {
      if (!byParent.has(r.parent)) byParent.set(r.parent, []);
      byParent.get(r.parent).push(r);
    }
    for (const [parent, kids] of byParent) {
      kids.sort((a, b) => a.position - b.position);
      nodes.get(parent).children = kids.map((k) => k.pk);
    }
    const siblings = nodes.get(top.parent).children;
    siblings.splice(Math.min(top.position, siblings.length), 0, top.pk);
    return top;
  }
  function dropRows(pk) {
    const n = nodes.get(pk);
    const siblings = nodes.get(n.parent).children;
    siblings.splice(siblings.indexOf(pk), 1);
    const stack = [pk];
    while (stack.length) {
      const p = stack.pop();
      stack.push(...nodes.get(p).children);
      nodes.delete(p);
      rows.delete(p);
      expanded.delete(p);
    }
    return n.parent;
  }
  function subtreePks(pk) {
    const out = [];
    const walk = (p) => { out.push(p); nodes.get(p).children.forEach(walk); };
    walk(pk);
    return out;
  }

  async function postSubtree(parent, position, fields) {
    const r = await api("POST", "/api/rubric-nodes/", { parent, position, ...fields });
    if (!r.ok) { await failed(r, "Adding"); return null; }
    const top = insertRows(r.json.nodes);
    nodes.get(parent).version += 1; // the server bumps the parent of an insertion
    expanded.add(parent);
    saveExpanded();
    applyShares(r.json.shares);
    rerenderChildren(parent);
    afterChange([parent], true);
    return { top, pks: r.json.nodes.map((n) => n.pk) };
  }
  // Keys typed between `a` (or `s`) and the new node's editor opening are its text, not shortcuts.
  let typeAhead = null; // null: no add waiting; else { text, commit }
  function typeAheadKey(e) {
    if (typeAhead === null || e.ctrlKey || e.metaKey || e.altKey) return false;
    if (e.key.length === 1) typeAhead.text += e.key;
    else if (e.key === "Backspace") typeAhead.text = typeAhead.text.slice(0, -1);
    else if (e.key === "Enter") typeAhead.commit = true;
    else if (e.key === "Escape") typeAhead = { text: "", commit: false };
    else return false;
    e.preventDefault();
    return true;
  }
  async function addNode(pk, where) {
    if (!canEdit) return;
    const typed = typeAhead ?? { text: "", commit: false };
    try {
      const n = nodes.get(pk);
      let parent = pk, position = n.children.length;
      if (where === "sibling") {
        if (pk === rootPk) { say("The root has no siblings", true); return; }
        parent = n.parent;
        position = nodes.get(parent).children.indexOf(pk) + 1;
      }
      const p = nodes.get(parent);
      // A leaf that gets its first child becomes an inner node, where a category is an error:
      // its categories move down to the new child, as one undo step.
      const categorisedLeaf = p.children.length === 0 && Boolean(p.task_category || p.finegrained_task_category);
      const fields = { requirements: "", task_category: p.task_category || "Code Development" };
      if (categorisedLeaf && p.finegrained_task_category) fields.finegrained_task_category = p.finegrained_task_category;
      const made = await postSubtree(parent, position, fields);
      if (!made) return;
      let op = { type: "add", pks: made.pks, parent, position };
      if (categorisedLeaf) {
        const cleared = await setCategory(parent, { task_category: null, finegrained_task_category: null });
        if (cleared) op = { type: "group", ops: [op, cleared] };
      }
      pushUndo(op);
      select(made.top.pk);
      say("Added; type the requirements");
      startInlineEdit(made.top.pk, typeAhead ?? typed);
    } finally {
      typeAhead = null;
    }
  }
  async function duplicate(pk) {
    if (!canEdit || pk === rootPk) return;
    const n = nodes.get(pk);
    const r = await api("POST", `/api/rubric-nodes/${pk}/duplicate/`);
    if (!r.ok) { await failed(r, "Duplicating"); return; }
    const top = insertRows(r.json.nodes);
    nodes.get(n.parent).version += 1; // the server bumps the parent of an insertion
    applyShares(r.json.shares);
    rerenderChildren(n.parent);
    afterChange([n.parent], true);
    pushUndo({ type: "add", pks: r.json.nodes.map((x) => x.pk), parent: n.parent, position: top.position });
    select(top.pk);
    say("Duplicated with fresh ids");
  }
  async function deleteRemote(pk) {
    const n = nodes.get(pk);
    const r = await api("DELETE", `/api/rubric-nodes/${pk}/?version=${n.version}`);
    if (r.status === 409) {
      applyNode(r.json.current);
      refreshRow(pk);
      say("Not deleted: someone else changed this node just now. Check it and try again.", true);
      return null;
    }
    if (!r.ok) { await failed(r, "Deleting"); return null; }
    const parent = dropRows(pk);
    if (nodes.has(parent)) nodes.get(parent).version += 1;
    applyShares(r.json.shares);
    rerenderChildren(parent);
    afterChange([parent], true);
    return r.json;
  }

  // Categories follow leafhood: a leaf needs one, an inner node must have none. A change of shape
  // that turns one into the other moves the category along, in the same undo step.
  function leafCategory(pk) {
    // The first categorised leaf of a subtree (pre-order): what its parent takes back.
    for (const p of subtreePks(pk)) {
      const x = nodes.get(p);
      if (x.children.length === 0 && x.task_category) {
        return { task_category: x.task_category, finegrained_task_category: x.finegrained_task_category ?? null };
      }
    }
    return null;
  }
  async function setCategory(pk, after) {
    const n = nodes.get(pk);
    const before = { task_category: n.task_category ?? null, finegrained_task_category: n.finegrained_task_category ?? null };
    if (!(await saveFields(pk, after, { record: false }))) return null;
    return { type: "edit", pk, before, after: { ...after } };
  }
  // A node whose last child left is a leaf again: it takes back that child's category.
  async function regainCategory(pk, category) {
    const n = nodes.get(pk);
    if (!n || n.children.length || n.task_category || !category) return null;
    return setCategory(pk, category);
  }
  // A categorised leaf that receives a child is an inner node now: its category goes.
  async function dropCategory(pk, wasLeaf) {
    const n = nodes.get(pk);
    if (!wasLeaf || !n || !(n.task_category || n.finegrained_task_category)) return null;
    return setCategory(pk, { task_category: null, finegrained_task_category: null });
  }
  const grouped = (op, ...more) => (more.some(Boolean) ? { type: "group", ops: [op, ...more.filter(Boolean)] } : op);

  async function removeNode(pk) {
    if (!canEdit) return;
    if (pk === rootPk) { say("The root cannot be deleted", true); return; }
    const n = nodes.get(pk);
    const siblings = nodes.get(n.parent).children;
    const next = siblings[siblings.indexOf(pk) + 1] ?? siblings[siblings.indexOf(pk) - 1] ?? n.parent;
    const category = leafCategory(pk);
    const removed = await deleteRemote(pk);
    if (!removed) return;
    const regained = await regainCategory(removed.parent, category);
    pushUndo(grouped({ type: "delete", pks: removed.pks, parent: removed.parent, position: removed.position, subtree: removed.subtree }, regained));
    select(next);
    say(`Deleted ${removed.pks.length} node${removed.pks.length === 1 ? "" : "s"}${regained ? "; its parent took back the category " + regained.after.task_category : ""} (Ctrl+Z to undo)`);
  }
  async function moveRemote(pk, parent, position) {
    const n = nodes.get(pk);
    if (pk === parent || ancestors(parent).includes(pk)) { say("A node cannot move into its own subtree", true); return false; }
    const r = await api("POST", `/api/rubric-nodes/${pk}/move/`, { version: n.version, parent, position });
    if (r.status === 409) { applyNode(r.json.current); say("Not moved: someone else changed this node. Try again.", true); return false; }
    if (!r.ok) { await failed(r, "Moving"); return false; }
    const oldParent = n.parent;
    const siblings = nodes.get(oldParent).children;
    siblings.splice(siblings.indexOf(pk), 1);
    const target = nodes.get(parent).children;
    target.splice(Math.min(r.json.position, target.length), 0, pk);
    n.parent = parent;
    n.version = r.json.version;
    expanded.add(parent);
    saveExpanded();
    applyShares(r.json.shares);
    // The moved subtree changes depth: rebuild the rows of both parents.
    for (const p of subtreePks(pk)) rows.delete(p);
    rerenderChildren(oldParent);
    if (parent !== oldParent) rerenderChildren(parent);
    if (!rows.get(pk)?.isConnected) revealNode(pk);
    afterChange([pk], true);
    return true;
  }
  async function move(pk, parent, position) {
    if (!canEdit || pk === rootPk) return;
    const n = nodes.get(pk);
    const from = { parent: n.parent, position: nodes.get(n.parent).children.indexOf(pk) };
    const category = leafCategory(pk);
    const targetWasLeaf = isLeaf(parent);
    if (!(await moveRemote(pk, parent, position))) return;
    const to = { parent, position: nodes.get(parent).children.indexOf(pk) };
    const moved = from.parent === parent ? [] : [await regainCategory(from.parent, category), await dropCategory(parent, targetWasLeaf)];
    pushUndo(grouped({ type: "move", pk, from, to }, ...moved));
    select(pk);
    say("Moved");
  }
  // Bulk edits: several nodes' fields in one request, all or none (a 409 names the stale node).
  async function bulkRemote(changesByPk) {
    const edits = [];
    for (const [key, changes] of Object.entries(changesByPk)) {
      const n = nodes.get(Number(key));
      if (!n) { say("Not changed: a node of this edit no longer exists. Reload the page.", true); return false; }
      edits.push({ pk: n.pk, version: n.version, ...changes });
    }
    if (!edits.length) return true;
    say("Saving…");
    const r = await api("POST", "/api/rubric-nodes/bulk-update/", { edits });
    if (r.status === 409) {
      applyNode(r.json.current);
      refreshRow(r.json.current.pk);
      say(`Nothing changed: someone else changed ${pathLabel(r.json.current.pk)} meanwhile. Check it and try again.`, true);
      return false;
    }
    if (!r.ok) { await failed(r, "Saving"); return false; }
    r.json.nodes.forEach(applyNode);
    afterChange(r.json.nodes.map((x) => x.pk), false);
    return true;
  }
  async function setLeafCategories(pk, changes) {
    const before = {}, after = {};
    for (const leaf of subtreePks(pk).filter((p) => p !== pk && isLeaf(p))) {
      const n = nodes.get(leaf);
      if (Object.keys(changes).every((k) => (n[k] ?? null) === changes[k])) continue;
      before[leaf] = Object.fromEntries(Object.keys(changes).map((k) => [k, n[k] ?? null]));
      after[leaf] = { ...changes };
    }
    const count = Object.keys(after).length;
    if (!count) { say("Every leaf below already has that category"); return; }
    if (!(await bulkRemote(after))) return;
    pushUndo({ type: "bulk", before, after });
    say(`Set the category of ${count} lea${count === 1 ? "f" : "ves"} (Ctrl+Z to undo)`);
  }

  function cut(pk) {
    if (!canEdit || pk === rootPk) return;
    rows.get(cutPk)?.firstChild.classList.remove("cut");
    cutPk = pk;
    rows.get(pk)?.firstChild.classList.add("cut");
    renderPanel();
    say("Cut: select the new place and press v (last child) or Shift+V (after it)");
  }
  async function paste(target, after) {
    if (cutPk === null || !nodes.has(cutPk)) { say("Nothing cut (press x on a node first)", true); return; }
    const pk = cutPk;
    let parent = target, position = nodes.get(target).children.length;
    if (after) {
      if (target === rootPk) { say("Nothing can go after the root", true); return; }
      parent = nodes.get(target).parent;
      const siblings = nodes.get(parent).children.filter((c) => c !== pk);
      position = siblings.indexOf(target) + 1;
    }
    rows.get(pk)?.firstChild.classList.remove("cut");
    cutPk = null;
    await move(pk, parent, position);
  }
  function reorder(pk, delta) {
    if (pk === rootPk) return;
    const n = nodes.get(pk);
    const index = nodes.get(n.parent).children.indexOf(pk);
    const to = index + delta;
    if (to < 0 || to >= nodes.get(n.parent).children.length) return;
    return move(pk, n.parent, to);
  }

  // --- undo / redo -------------------------------------------------------------------------
  function pushUndo(op) {
    history.undo.push(op);
    history.redo = [];
    saveHistory();
  }
  // Re-created rows get new pks: rewrite every stored operation that named the old ones.
  function remap(oldPks, newPks) {
    const map = new Map(oldPks.map((p, i) => [p, newPks[i]]));
    const fix = (p) => (map.has(p) ? map.get(p) : p);
    const all = [...history.undo, ...history.redo].flatMap((op) => (op.type === "group" ? [op, ...op.ops] : [op]));
    const fixKeys = (byPk) => Object.fromEntries(Object.entries(byPk).map(([p, v]) => [fix(Number(p)), v]));
    for (const op of all) {
      if (op.type === "bulk") { op.before = fixKeys(op.before); op.after = fixKeys(op.after); continue; }
      if (op.pk !== undefined) op.pk = fix(op.pk);
      if (op.parent !== undefined) op.parent = fix(op.parent);
      if (op.pks) op.pks = op.pks.map(fix);
      for (const side of [op.from, op.to]) if (side) side.parent = fix(side.parent);
    }
    if (map.has(selected)) selected = map.get(selected);
  }
  async function runInverse(op, direction) {
    // direction "undo" applies the inverse of op; "redo" applies op again.
    const forward = direction === "redo";
    if (op.type === "group") {
      for (const part of forward ? op.ops : [...op.ops].reverse()) if (!(await runInverse(part, direction))) return false;
      return true;
    }
    if (op.type === "edit") {
      const ok = await saveFields(op.pk, forward ? op.after : op.before, { record: false });
      if (ok) select(op.pk);
      return ok;
    }
    if (op.type === "bulk") return bulkRemote(forward ? op.after : op.before);
    if (op.type === "move") {
      const side = forward ? op.to : op.from;
      const ok = await moveRemote(op.pk, side.parent, side.position);
      if (ok) select(op.pk);
      return ok;
    }
    const removing = (op.type === "add") === forward ? false : true;
    if (removing) {
      const removed = await deleteRemote(op.pks[0]);
      if (!removed) return false;
      op.subtree = removed.subtree;
      select(nodes.has(op.parent) ? op.parent : rootPk);
      return true;
    }
    const made = await postSubtree(op.parent, op.position, { subtree: op.subtree });
    if (!made) return false;
    remap(op.pks, made.pks);
    op.pks = made.pks;
    select(made.top.pk);
    return true;
  }
  let busy = false;
  async function undo(direction) {
    if (busy || !canEdit) return;
    const from = direction === "undo" ? history.undo : history.redo;
    const to = direction === "undo" ? history.redo : history.undo;
    const op = from.pop();
    if (!op) { say(`Nothing to ${direction}`); return; }
    busy = true;
    try {
      const ok = await runInverse(op, direction);
      if (ok) { to.push(op); say(direction === "undo" ? "Undone" : "Redone"); }
      else from.push(op);
    } finally {
      busy = false;
      saveHistory();
    }
  }

  // --- inline editing ----------------------------------------------------------------------
  // ``typed``: text typed before the editor opened (a new node's), kept with the caret after it.
  function startInlineEdit(pk, typed = null) {
    if (!canEdit) return;
    const item = rows.get(pk);
    if (!item) return;
    const req = item.firstChild.querySelector(".rx-req");
    if (!req) return;
    const box = el("textarea", "rx-inline");
    box.value = typed?.text || nodes.get(pk).requirements;
    box.rows = Math.min(8, Math.max(2, Math.ceil(box.value.length / 90)));
    box.setAttribute("aria-label", "Requirements");
    req.replaceWith(box);
    box.focus();
    if (typed?.text) box.setSelectionRange(box.value.length, box.value.length);
    else box.select();
    let done = false;
    const finish = async (save) => {
      if (done) return;
      done = true;
      const value = box.value;
      box.remove(); // the row redraws itself again from here on (see fillRow)
      refreshRow(pk);
      treeEl.focus();
      if (save) await write(() => saveFields(pk, { requirements: value }));
    };
    if (typed?.commit) { finish(true); return; }
    box.addEventListener("keydown", (e) => {
      e.stopPropagation();
      if (e.key === "Escape") { e.preventDefault(); finish(false); }
      else if (e.key === "Enter" && (e.ctrlKey || e.metaKey || !e.shiftKey)) { e.preventDefault(); finish(true); }
    });
    box.addEventListener("blur", () => finish(true));
  }

  // --- events ------------------------------------------------------------------------------
  function toggle(pk, open) {
    if (isLeaf(pk)) return;
    const now = open ?? !expanded.has(pk);
    if (now) expanded.add(pk); else expanded.delete(pk);
    saveExpanded();
    rerenderChildren(pk);
  }
  treeEl.addEventListener("click", (e) => {
    const item = e.target.closest(".rx-item");
    if (!item) return;
    const pk = Number(item.dataset.pk);
    if (e.target.dataset.action === "toggle") toggle(pk);
    select(pk, { scroll: false });
    treeEl.focus({ preventScroll: true });
  });
  treeEl.addEventListener("dblclick", (e) => {
    const item = e.target.closest(".rx-item");
    if (item && e.target.classList.contains("rx-req")) startInlineEdit(Number(item.dataset.pk));
  });
  function visibleOrder() {
    return [...treeEl.querySelectorAll(".rx-item")].map((x) => Number(x.dataset.pk));
  }
  // Every key acts on the node selected when its turn comes: while writes are pending, keys wait
  // in line behind them (Left after `d` goes to the copy's parent, as it would have had `d` been
  // instant), so a quick run of keys means what it says.
  const keyActions = {
    ArrowDown: () => { const o = visibleOrder(); select(o[Math.min(o.indexOf(selected) + 1, o.length - 1)]); },
    ArrowUp: () => { const o = visibleOrder(); select(o[Math.max(o.indexOf(selected) - 1, 0)]); },
    ArrowRight: () => {
      const n = nodes.get(selected);
      if (!isLeaf(n.pk) && !isOpen(n.pk)) toggle(n.pk, true);
      else if (!isLeaf(n.pk)) select(n.children.find((c) => !visibleInFilter || visibleInFilter.has(c)) ?? n.pk);
    },
    ArrowLeft: () => {
      const n = nodes.get(selected);
      if (!isLeaf(n.pk) && isOpen(n.pk) && !visibleInFilter) toggle(n.pk, false); else if (n.parent !== null) select(n.parent);
    },
    Home: () => select(rootPk),
    End: () => { const o = visibleOrder(); select(o[o.length - 1]); },
    Enter: () => startInlineEdit(selected),
    e: () => nextProblem(),
    x: () => cut(selected),
    "?": () => $("rx-help").showModal(),
    "/": () => $("rx-search").focus(),
  };
  const keyWrites = {
    a: () => addNode(selected, "child"),
    s: () => addNode(selected, "sibling"),
    d: () => duplicate(selected),
    v: () => paste(selected, false),
    V: () => paste(selected, true),
    Delete: () => removeNode(selected),
    Backspace: () => removeNode(selected),
  };
  treeEl.addEventListener("keydown", (e) => {
    if (e.target !== treeEl) return;
    if (typeAheadKey(e)) return;
    const key = e.key;
    const ctrl = e.ctrlKey || e.metaKey;
    if (ctrl && (key === "z" || key === "Z")) { e.preventDefault(); write(() => undo(e.shiftKey ? "redo" : "undo")); return; }
    if (ctrl && key === "y") { e.preventDefault(); write(() => undo("redo")); return; }
    if (ctrl) return;
    if (e.altKey && (key === "ArrowUp" || key === "ArrowDown")) {
      e.preventDefault();
      write(() => reorder(selected, key === "ArrowUp" ? -1 : 1));
      return;
    }
    if (e.altKey) return;
    if (keyWrites[key] && canEdit) {
      e.preventDefault();
      if (key === "a" || key === "s") typeAhead = { text: "", commit: false };
      write(keyWrites[key]);
    } else if (keyActions[key]) {
      e.preventDefault();
      run(keyActions[key]);
    }
  });
  document.addEventListener("keydown", (e) => {
    // "?" and undo also work when focus is on the page rather than the tree.
    if (e.target !== document.body) return;
    if (e.key === "?") { e.preventDefault(); $("rx-help").showModal(); }
    else if ((e.ctrlKey || e.metaKey) && (e.key === "z" || e.key === "Z")) { e.preventDefault(); write(() => undo(e.shiftKey ? "redo" : "undo")); }
  });
  $("rx-help-button").addEventListener("click", () => $("rx-help").showModal());
  $("rx-undo")?.addEventListener("click", () => write(() => undo("undo")));
  $("rx-redo")?.addEventListener("click", () => write(() => undo("redo")));
  // The version message is asked in a dialog of the page (never window.prompt, which blocks the tab).
  $("rx-save-version")?.addEventListener("click", () => {
    $("rx-version-message").value = "";
    $("rx-version").showModal();
  });
  $("rx-version")?.addEventListener("close", () => {
    if ($("rx-version").returnValue !== "save") return;
    const message = $("rx-version-message").value;
    // In line behind pending edits, so the version holds them.
    write(async () => {
      const r = await api("POST", `/api/papers/${paperPk}/versions/`, { message });
      if (r.ok) { say(`Saved version ${r.json.number}`); return; }
      if (!r.json?.problems) { await failed(r, "Saving the version"); return; }
      const errors = r.json.problems.filter((p) => p.level === "error").length;
      await refreshProblems();
      showProblems(true);
      say(`Not saved: ${errors} error${errors === 1 ? "" : "s"} to fix first, listed under Problems (e: next problem)`, true);
    });
  });
  $("rx-expand-all").addEventListener("click", () => {
    for (const n of nodes.values()) if (n.children.length) expanded.add(n.pk);
    saveExpanded();
    renderAll();
  });
  $("rx-collapse-all").addEventListener("click", () => {
    expanded.clear();
    expanded.add(rootPk);
    saveExpanded();
    renderAll();
    select(rootPk);
  });

  // Drag and drop: upper quarter = before, lower quarter = after, middle = last child.
  let dragPk = null;
  function dropZone(e, row) {
    const box = row.getBoundingClientRect();
    const y = e.clientY - box.top;
    return y < box.height * 0.25 ? "before" : y > box.height * 0.75 ? "after" : "into";
  }
  treeEl.addEventListener("dragstart", (e) => {
    const item = e.target.closest?.(".rx-item");
    if (!item) return;
    dragPk = Number(item.dataset.pk);
    e.dataTransfer.effectAllowed = "move";
    e.dataTransfer.setData("text/plain", String(dragPk));
  });
  treeEl.addEventListener("dragover", (e) => {
    const row = e.target.closest?.(".rx-row");
    if (dragPk === null || !row) return;
    const pk = Number(row.parentElement.dataset.pk);
    if (pk === dragPk || ancestors(pk).includes(dragPk)) return;
    e.preventDefault();
    treeEl.querySelectorAll(".drop-before,.drop-after,.drop-into").forEach((x) => x.classList.remove("drop-before", "drop-after", "drop-into"));
    row.classList.add("drop-" + dropZone(e, row));
  });
  treeEl.addEventListener("dragleave", (e) => e.target.closest?.(".rx-row")?.classList.remove("drop-before", "drop-after", "drop-into"));
  treeEl.addEventListener("drop", (e) => {
    const row = e.target.closest?.(".rx-row");
    if (dragPk === null || !row) return;
    e.preventDefault();
    row.classList.remove("drop-before", "drop-after", "drop-into");
    const target = Number(row.parentElement.dataset.pk);
    const zone = dropZone(e, row);
    const pk = dragPk;
    dragPk = null;
    write(() => {
      if (zone === "into" || target === rootPk) return move(pk, target, nodes.get(target).children.filter((c) => c !== pk).length);
      const parent = nodes.get(target).parent;
      const siblings = nodes.get(parent).children.filter((c) => c !== pk);
      return move(pk, parent, siblings.indexOf(target) + (zone === "after" ? 1 : 0));
    });
  });
  treeEl.addEventListener("dragend", () => { dragPk = null; });

  // Search and category filter: matches plus their ancestors, all shown open.
  const search = $("rx-search");
  const categorySelect = $("rx-category");
  for (const c of data.categories) {
    const o = el("option", "", c);
    o.value = c;
    categorySelect.append(o);
  }
  let searchTimer = null;
  function applyFilter() {
    filter = { text: search.value.trim().toLowerCase(), category: categorySelect.value };
    if (!filter.text && !filter.category) {
      visibleInFilter = null;
      renderAll();
      say("");
      select(selected);
      return;
    }
    const matches = [];
    for (const n of nodes.values()) {
      const textOk = !filter.text || (n.requirements || "").toLowerCase().includes(filter.text) || String(n.id).toLowerCase().includes(filter.text);
      const catOk = !filter.category || (n.children.length === 0 && n.task_category === filter.category);
      if (textOk && catOk) matches.push(n.pk);
    }
    visibleInFilter = new Set([rootPk]);
    for (const pk of matches) {
      visibleInFilter.add(pk);
      for (const a of ancestors(pk)) visibleInFilter.add(a);
    }
    renderAll();
    say(`${matches.length} match${matches.length === 1 ? "" : "es"}`);
    if (matches.length) select(matches[0]);
  }
  search.addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(applyFilter, 120); });
  search.addEventListener("keydown", (e) => { if (e.key === "Escape") { search.value = ""; applyFilter(); treeEl.focus(); } else if (e.key === "Enter") treeEl.focus(); });
  categorySelect.addEventListener("change", applyFilter);

  renderAll();
  // ?node=PK (the versions page's problem links) opens the editor on that node.
  const wanted = Number(new URLSearchParams(window.location.search).get("node"));
  if (nodes.has(wanted)) select(wanted); else select(rootPk, { scroll: false });
  saveHistory();
  root.dataset.ready = "1";
}
