// Progressive-RL job page: the stages as a timeline and live figures (reward and eval score,
// advantage spread, rollout lengths, truncation rate, judge queue depth), from the stored metrics
// and then the job page's own WebSocket events (job.js re-dispatches them as "job:event").
(() => {
  "use strict";
  const panel = document.getElementById("rl-panel");
  if (!panel) return;
  const jobId = panel.dataset.jobId;
  const units = { h: 3600, m: 60, s: 1, "": 1 };
  // "2h:10, 4h:10" -> [{timeout: 7200, iterations: 10, label: "2h"}, ...] (the form's format)
  const stages = (panel.dataset.stages || "").split(",").map((part) => part.trim()).filter(Boolean).map((part) => {
    const m = /^(\d+(?:\.\d+)?)\s*([smh]?)\s*:\s*(\d+)$/.exec(part);
    return m ? { timeout: parseFloat(m[1]) * units[m[2]], iterations: parseInt(m[3], 10), label: m[1] + (m[2] || "s") } : null;
  }).filter(Boolean);
  const series = {};
  const wanted = ["reward", "q_mean", "advantage_std", "advantage_min", "advantage_max", "rollout_turns",
    "rollout_tokens", "truncation_rate", "judge_queue_depth", "stage", "eval_score"];
  let drawPending = false;

  function add(name, step, value) {
    if (!wanted.includes(name)) return;
    const s = series[name] || (series[name] = { x: [], y: [] });
    if (s.x.length && s.x[s.x.length - 1] >= step) return;
    s.x.push(step); s.y.push(value);
  }

  function lastStep() {
    const s = series.reward;
    return s && s.x.length ? s.x[s.x.length - 1] : 0;
  }

  // The last eval score at an iteration in (from, to], or null: evaluations run every k iterations.
  function lastEval(from, to) {
    const s = series.eval_score;
    if (!s) return null;
    let found = null;
    s.x.forEach((x, i) => { if (x > from && x <= to) found = { step: x, value: s.y[i] }; });
    return found;
  }

  function drawTimeline() {
    const list = document.getElementById("rl-timeline");
    list.replaceChildren();
    const done = lastStep();
    let first = 0;
    stages.forEach((stage, k) => {
      const finished = Math.min(Math.max(done - first, 0), stage.iterations);
      const li = document.createElement("li");
      li.style.setProperty("--iters", String(stage.iterations));
      li.className = finished >= stage.iterations ? "done" : finished > 0 ? "running" : "pending";
      const fill = document.createElement("div");
      fill.className = "fill";
      fill.style.width = `${(100 * finished) / stage.iterations}%`;
      const label = document.createElement("span");
      const evaluated = lastEval(first, first + stage.iterations);
      label.textContent = `Stage ${k + 1} · timeout ${stage.label} · ${finished}/${stage.iterations} iterations` +
        (evaluated ? ` · eval ${evaluated.value.toFixed(3)}` : "");
      li.append(fill, label);
      list.append(li);
      first += stage.iterations;
    });
    const r = series.reward, t = series.truncation_rate, q = series.judge_queue_depth;
    if (r && r.y.length) {
      const pct = (v) => `${Math.round(v * 100)}%`;
      document.getElementById("rl-summary").textContent =
        `iteration ${done}: reward ${r.y[r.y.length - 1].toFixed(3)}` +
        (t ? `, truncated ${pct(t.y[t.y.length - 1])}` : "") + (q ? `, judge queue ${q.y[q.y.length - 1]}` : "");
      const e = lastEval(0, done);
      if (e) document.getElementById("rl-summary").textContent += `; eval ${e.value.toFixed(3)} at iteration ${e.step}`;
    }
  }

  function trace(name, axis, extra = {}) {
    const s = series[name] || { x: [], y: [] };
    return { x: s.x, y: s.y, name, mode: "lines+markers", xaxis: "x", yaxis: axis, ...extra };
  }

  function drawPlots() {
    drawPending = false;
    drawTimeline();
    if (!window.Plotly || !series.reward) return;
    // Stage boundaries as dashed lines across every panel.
    const shapes = [];
    let boundary = 0;
    stages.slice(0, -1).forEach((stage) => {
      boundary += stage.iterations;
      shapes.push({ type: "line", xref: "x", yref: "paper", x0: boundary + 0.5, x1: boundary + 0.5, y0: 0, y1: 1,
        line: { dash: "dot", width: 1, color: "#888" } });
    });
    const traces = [
      trace("reward", "y"), trace("q_mean", "y"),
      // Eval-split papers every k iterations, on the reward's axis: training reward vs held-back score.
      ...(series.eval_score ? [trace("eval_score", "y", { line: { dash: "dash" }, marker: { symbol: "diamond", size: 9 } })] : []),
      trace("advantage_std", "y2"), trace("advantage_min", "y2", { line: { dash: "dot" } }),
      trace("advantage_max", "y2", { line: { dash: "dot" } }),
      // Turns and tokens differ by ~500x: tokens get their own scale on the right.
      trace("rollout_turns", "y3"), trace("rollout_tokens", "y6", { line: { dash: "dot" } }),
      trace("truncation_rate", "y4"), trace("judge_queue_depth", "y5"),
    ];
    const titled = (text) => ({ title: { text }, automargin: true });
    Plotly.react(document.getElementById("rl-plots"), traces, {
      grid: { rows: 5, columns: 1, pattern: "coupled", ygap: 0.35 }, shapes, height: 640,
      margin: { t: 10, r: 10, b: 40, l: 60 }, xaxis: { title: { text: "iteration" } },
      yaxis: titled("reward"), yaxis2: titled("advantage"), yaxis3: titled("turns"),
      yaxis6: { ...titled("tokens"), overlaying: "y3", side: "right", showgrid: false },
      yaxis4: { ...titled("truncated"), range: [0, 1.05] }, yaxis5: titled("judge queue"),
      legend: { orientation: "h" },
    }, { displaylogo: false, responsive: true });
  }

  function schedule() {
    if (!drawPending) { drawPending = true; requestAnimationFrame(drawPlots); }
  }

  async function reload() {
    const response = await fetch(`/api/jobs/${jobId}/metrics/`, { credentials: "same-origin" });
    if (!response.ok) return;
    for (const key of Object.keys(series)) delete series[key];
    for (const m of await response.json()) add(m.name, m.step, m.value);
    schedule();
  }

  document.addEventListener("job:event", (e) => {
    const ev = e.detail;
    if (ev.kind === "metric") {
      for (const [name, value] of Object.entries(ev.values)) add(name, ev.step, value);
      schedule();
    } else if (ev.kind === "snapshot") {
      reload();
    }
  });
  window.addEventListener("load", reload);
  drawTimeline();
})();
