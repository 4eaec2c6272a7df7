// The overview's flow chart, drawn from the figures the page carries (data-flow); the same
// figures are in the table beside it.
(function () {
  "use strict";
  function draw() {
    var canvas = document.getElementById("flow-chart");
    if (!canvas || typeof Chart === "undefined") return;
    var data = JSON.parse(canvas.getAttribute("data-flow"));
    drawMoney(data);
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
  function drawMoney(data) {
    var canvas = document.getElementById("money-chart");
    if (!canvas) return;
    if (!data.money) { canvas.parentNode.hidden = true; return; }
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: [
          { label: "Revenue from new customers", data: data.revenue_new, backgroundColor: "#1f6feb", stack: "in" },
          { label: "Revenue from returning customers", data: data.revenue_returning, backgroundColor: "#2da44e", stack: "in" },
          { label: "Yearly spend lost with churned customers", data: data.revenue_lost, backgroundColor: "#cf222e", stack: "out" }
        ]
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        scales: { x: { stacked: true }, y: { stacked: true } }
      }
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
