// Score distributions (judged scores in ten bins over [0, 1]) as plotly bar charts.
// Each chart is a <div data-score-histogram="ID"> next to a json_script element with that id.
(function () {
  "use strict";
  function draw() {
    document.querySelectorAll("[data-score-histogram]").forEach(function (el) {
      var source = document.getElementById(el.dataset.scoreHistogram);
      if (!source || !window.Plotly) return;
      var counts = JSON.parse(source.textContent) || [];
      var labels = counts.map(function (_, i) { return (i / counts.length).toFixed(1) + "–" + ((i + 1) / counts.length).toFixed(1); });
      window.Plotly.newPlot(el, [{ type: "bar", x: labels, y: counts, marker: { color: "#4a6fa5" } }], {
        height: 260, margin: { t: 10, r: 10, b: 50, l: 40 }, xaxis: { title: "judged score" }, yaxis: { title: "runs" },
      }, { displayModeBar: false, responsive: true });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw); else draw();
})();
