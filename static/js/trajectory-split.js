// Split-window view: draws the windows of the plan htmx swaps in, and opens the inspector.
//
// Top panel: one row per window; grey = pinned prefix, blue = kept history (opacity = how much
// of the turn was kept), green = target turns, orange = targets shared with the neighbour
// (overlap). Bottom panel: tokens per window (prefix / history / targets) against L_max.
"use strict";
(() => {
  const trajectory = JSON.parse(document.getElementById("split-trajectory").textContent);
  const form = document.getElementById("split-form");
  const tokensAxis = document.getElementById("x-tokens");

  function params() {
    const data = new FormData(form);
    const query = new URLSearchParams();
    for (const [k, v] of data) if (v !== "") query.append(k, v);
    return query;
  }

  const inspector = document.getElementById("inspector");
  const inspectorHint = inspector.innerHTML;
  let plan = 0; // bumped by every new plan: a window of an older plan is not a window of this one

  function openWindow(number) {
    if (!window.htmx) return Promise.resolve();
    const asked = plan;
    return window.htmx.ajax("GET", `/trajectories/${trajectory}/split/window/${number}/?${params()}`, { target: "#inspector" })
      .then(() => {
        inspector.dataset.plan = String(asked);
        // The inspector sits below the figure: bring it into view, as the click asked for it.
        inspector.scrollIntoView({ block: "start" });
        inspector.focus({ preventScroll: true });
      });
  }

  function bars(name, color, y, base, length, extra = {}) {
    return {
      type: "bar", orientation: "h", name, y, base, x: length, marker: { color, ...(extra.marker || {}) },
      hovertemplate: extra.hover || `${name}: window %{y}<extra></extra>`, customdata: extra.customdata,
      xaxis: "x", yaxis: "y", width: 0.7,
    };
  }

  function draw() {
    const holder = document.getElementById("window-plot");
    const source = document.getElementById("split-figure");
    if (!holder || !source || !window.Plotly) return;
    const fig = JSON.parse(source.textContent);
    const useTokens = tokensAxis.checked;
    const x = (turn) => (useTokens ? fig.cumulative[turn] : turn); // turn boundary -> axis
    const prefix = { y: [], base: [], len: [] };
    const history = { y: [], base: [], len: [], opacity: [], text: [] };
    const targets = { y: [], base: [], len: [], text: [] };
    const overlap = { y: [], base: [], len: [] };
    for (const w of fig.windows) {
      if (fig.prefix_end >= 0) { prefix.y.push(w.n); prefix.base.push(x(0)); prefix.len.push(x(fig.prefix_end + 1) - x(0)); }
      for (const [turn, kept] of w.history) {
        history.y.push(w.n); history.base.push(x(turn)); history.len.push(x(turn + 1) - x(turn));
        history.opacity.push(0.15 + 0.85 * kept); history.text.push(`turn ${turn}: ${Math.round(kept * 100)}% kept`);
      }
      const [start, end] = w.targets;
      targets.y.push(w.n); targets.base.push(x(start)); targets.len.push(x(end + 1) - x(start));
      targets.text.push(`turns ${start}–${end}, ${w.loss.length} trained`);
      if (w.overlap_prev) {
        overlap.y.push(w.n); overlap.base.push(x(start)); overlap.len.push(x(start + w.overlap_prev) - x(start));
      }
    }
    const numbers = fig.windows.map((w) => w.n);
    const traces = [
      bars("prefix", "#868e96", prefix.y, prefix.base, prefix.len),
      bars("history (shade = kept)", "#1c7ed6", history.y, history.base, history.len,
        { marker: { opacity: history.opacity }, customdata: history.text, hover: "%{customdata}<extra>history</extra>" }),
      bars("targets", "#2f9e44", targets.y, targets.base, targets.len,
        { customdata: targets.text, hover: "window %{y}: %{customdata}<extra>targets</extra>" }),
      bars("overlap", "#f08c00", overlap.y, overlap.base, overlap.len),
    ];
    // barmode is per figure (overlay, for the rows above): stack by overlaying running sums.
    const sums = [
      ["targets", "#2f9e44", (w) => w.tokens.total],
      ["history", "#1c7ed6", (w) => w.tokens.prefix + w.tokens.history],
      ["prefix", "#868e96", (w) => w.tokens.prefix],
    ];
    for (const [part, color, value] of sums) {
      traces.push({
        type: "bar", name: `${part} tokens`, x: numbers, y: fig.windows.map(value),
        marker: { color }, xaxis: "x2", yaxis: "y2", showlegend: false,
        hovertemplate: `window %{x}: %{y} tokens up to ${part}<extra></extra>`,
      });
    }
    const rows = Math.max(numbers.length, 1);
    const layout = {
      barmode: "overlay", height: Math.min(900, 220 + rows * 18), margin: { l: 50, r: 10, t: 10, b: 40 },
      legend: { orientation: "h", y: 1.06 }, hovermode: "closest",
      xaxis: { domain: [0, 1], anchor: "y", title: { text: useTokens ? "cumulative tokens" : "turn" } },
      yaxis: { domain: [0.44, 1], autorange: "reversed", title: { text: "window" }, dtick: rows > 30 ? undefined : 1 },
      xaxis2: { domain: [0, 1], anchor: "y2", title: { text: "window" } },
      yaxis2: { domain: [0, 0.26], title: { text: "tokens" } },
      shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, yref: "y2", y0: fig.l_max, y1: fig.l_max,
        line: { color: "#e03131", dash: "dash", width: 1.5 } }],
      annotations: [{ xref: "paper", x: 1, yref: "y2", y: fig.l_max, text: "L_max", showarrow: false,
        font: { color: "#e03131", size: 11 }, xanchor: "right", yanchor: "bottom" }],
    };
    window.Plotly.react(holder, traces, layout, { displayModeBar: false, responsive: true }).then(() => {
      holder.removeAllListeners?.("plotly_click");
      holder.on("plotly_click", (event) => {
        const point = event.points[0];
        if (!point) return;
        openWindow(point.data.xaxis === "x2" ? point.x : point.y);
      });
    });
  }

  tokensAxis.addEventListener("change", (event) => { event.stopPropagation(); draw(); });
  document.body.addEventListener("htmx:afterSwap", (event) => {
    if (event.detail.target && event.detail.target.id === "split-plan") plan += 1;
  });
  document.body.addEventListener("htmx:afterSettle", (event) => {
    if (event.detail.target && event.detail.target.id === "split-plan") {
      draw();
      if (inspector.dataset.plan !== String(plan)) {
        inspector.innerHTML = inspectorHint;
        delete inspector.dataset.plan;
      }
      const pin = document.getElementById("pin-value");
      if (pin) pin.value = form.querySelector("[name=prefix_end]").value;
      const link = document.getElementById("export-link");
      if (link) link.search = `?ids=${trajectory}&${params()}`;
    }
  });
  draw();
  window.splitView = { openWindow, draw };
})();
