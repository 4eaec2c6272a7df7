// The outcomes chart: each group's difference in conversion rate as its 95% interval (a
// floating bar from low to high, in percentage points); the table beside it has the figures.
(function () {
  "use strict";
  // A lift or harm against the model's forecast (no control group) is weaker evidence: paler.
  var COLOURS = { lift: "#2da44e", harm: "#cf222e", lift_vs_forecast: "#a6dfb4", harm_vs_forecast: "#f1a7a9" };
  var SAID = { too_small: " (too small to tell)", lift_vs_forecast: " (over the forecast)", harm_vs_forecast: " (against the forecast)" };
  function draw() {
    var canvas = document.getElementById("lift-chart");
    if (!canvas || typeof Chart === "undefined") return;
    var rows = JSON.parse(canvas.getAttribute("data-lift"));
    if (!rows.length) { canvas.parentNode.hidden = true; return; }
    canvas.parentNode.style.height = Math.max(8, 3 + rows.length * 2.2) + "rem";
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: rows.map(function (r) { return r.label + (SAID[r.verdict] || ""); }),
        datasets: [{
          label: "Difference in conversion rate, 95% interval (points)",
          data: rows.map(function (r) { return [r.low, r.high]; }),
          backgroundColor: rows.map(function (r) { return COLOURS[r.verdict] || "#8c959f"; })
        }]
      },
      options: {
        indexAxis: "y",
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        plugins: {
          tooltip: {
            callbacks: {
              label: function (ctx) {
                var r = rows[ctx.dataIndex];
                return r.estimate + " pts (" + r.low + " to " + r.high + ")";
              }
            }
          }
        },
        scales: { x: { title: { display: true, text: "percentage points" } } }
      }
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
