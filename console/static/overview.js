// The overview's charts, from the numbers the page carries (no request of its own).
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("chart-data").textContent);
  var colours = ["#2563eb", "#16a34a", "#dc2626", "#d97706", "#7c3aed", "#0891b2"];
  function series(named) {
    return Object.keys(named).map(function (name, i) {
      return { label: name, data: named[name], backgroundColor: colours[i % colours.length],
               borderColor: colours[i % colours.length] };
    });
  }
  window.consoleCharts = [
    new Chart(document.getElementById("points-chart"), {
      type: "line", data: { labels: data.days, datasets: series(data.points) },
      options: { animation: false }
    }),
    new Chart(document.getElementById("redemptions-chart"), {
      type: "bar", data: { labels: data.redemptions.skus, datasets: series(data.redemptions.outcomes) },
      options: { animation: false }
    }),
    new Chart(document.getElementById("risk-chart"), {
      type: "bar", data: { labels: data.days, datasets: series(data.risk) },
      options: { animation: false, scales: { x: { stacked: true }, y: { stacked: true } } }
    })
  ];
})();
