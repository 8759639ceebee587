/* Judge comparison report plots (plotly, served from our static files).
 * Hooks: plot-scatter, plot-categories, plot-heatmap, plot-cost (data-testid on each plot box). */
(() => {
  "use strict";
  const data = JSON.parse(document.getElementById("report-plots").textContent);
  const layout = (extra) => ({ margin: { l: 50, r: 10, t: 10, b: 50 }, height: 300, ...extra });
  const opts = { displayModeBar: false, responsive: true };
  function draw() {
    const xs = data.scatter.map((p) => p.x);
    const ys = data.scatter.map((p) => p.y);
    Plotly.newPlot("plot-scatter", [
      { x: xs, y: ys, text: data.scatter.map((p) => p.label), mode: "markers", type: "scatter", name: "submissions" },
      { x: [0, 1], y: [0, 1], mode: "lines", line: { dash: "dot", color: "#adb5bd" }, name: "diagonal", hoverinfo: "skip" },
    ], layout({ xaxis: { title: { text: data.reference }, range: [0, 1] }, yaxis: { title: { text: data.candidate }, range: [0, 1] }, showlegend: false }), opts);
    Plotly.newPlot("plot-categories", [
      { x: data.categories.map((c) => c.category), y: data.categories.map((c) => c.f1), type: "bar",
        text: data.categories.map((c) => `n=${c.n}`), hovertemplate: "%{x}: %{y:.3f} (%{text})<extra></extra>" },
    ], layout({ yaxis: { range: [0, 1], title: { text: "macro F1" } } }), opts);
    Plotly.newPlot("plot-heatmap", [
      { z: data.heatmap.values, x: data.heatmap.submissions, y: data.heatmap.subtrees, type: "heatmap", colorscale: "RdBu", zmid: 0,
        hovertemplate: "%{y}<br>%{x}<br>reference − candidate: %{z:.4f}<extra></extra>" },
    ], layout({ margin: { l: 200, r: 10, t: 10, b: 80 }, yaxis: { automargin: true } }), opts);
    Plotly.newPlot("plot-cost", [
      { x: data.landscape.map((j) => j.cost_per_submission), y: data.landscape.map((j) => j.macro_f1),
        text: data.landscape.map((j) => j.judge), mode: "markers+text", textposition: "top center", type: "scatter" },
    ], layout({ xaxis: { title: { text: "USD per submission" } }, yaxis: { title: { text: "leaf macro F1" }, range: [0, 1.05] } }), opts);
  }
  if (window.Plotly) draw(); else window.addEventListener("load", draw);
})();
