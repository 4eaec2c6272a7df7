// The overview's flow chart, drawn from the figures the page carries (data-flow); the same
// figures are in the table beside it.
(function () {
  "use strict";
  function draw() {
    var canvas = document.getElementById("flow-chart");
    if (!canvas || typeof Chart === "undefined") return;
    var data = JSON.parse(canvas.getAttribute("data-flow"));
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: [
          { label: "New", data: data["new"], backgroundColor: "#1f6feb", stack: "in" },
          { label: "Reactivated", data: data.reactivated, backgroundColor: "#2da44e", stack: "in" },
          { label: "Churned", data: data.churned, backgroundColor: "#cf222e", stack: "out" },
          { label: "Net", data: data.net, type: "line", borderColor: "#24292f", backgroundColor: "#24292f" }
        ]
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        scales: { x: { stacked: true }, y: { stacked: false, ticks: { precision: 0 } } }
      }
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
