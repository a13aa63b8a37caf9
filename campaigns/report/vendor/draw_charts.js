// Draws the four charts of a wacamp HTML report from the facts JSON in the page.
(function () {
  "use strict";
  const facts = JSON.parse(document.getElementById("facts").textContent);
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  const c = facts.counts;
  const charts = [];
  const seconds = (points, per) => points.map(([x, n]) => ({x: x, y: per ? n / facts.timeline.bucket_s : n}));
  const cumulative = (points) => { let t = 0; return points.map(([x, n]) => ({x: x, y: (t += n)})); };
  const timeAxis = {type: "linear", min: 0, title: {display: true, text: "seconds since the first send"}};
  charts.push(new Chart(document.getElementById("funnel"), {
    type: "bar",
    data: {labels: ["planned", "accepted", "sent", "delivered", "read", "failed", "unknown", "pending"],
           datasets: [{label: "messages", backgroundColor: "#2f7ed8",
                       data: [c.planned, c.accepted, c.sent, c.delivered, c.read, c.failed, c.unknown, c.pending]}]},
    options: {plugins: {legend: {display: false}}}
  }));
  charts.push(new Chart(document.getElementById("sends"), {
    type: "line",
    data: {datasets: [{label: "sends per second", borderColor: "#2f7ed8", pointRadius: 0,
                       data: seconds(facts.timeline.sends, true)}]},
    options: {scales: {x: timeAxis, y: {beginAtZero: true}}}
  }));
  charts.push(new Chart(document.getElementById("deliveries"), {
    type: "line",
    data: {datasets: [
      {label: "delivered (cumulative)", borderColor: "#3fa34d", pointRadius: 0, data: cumulative(facts.timeline.delivered)},
      {label: "read (cumulative)", borderColor: "#8e44ad", pointRadius: 0, data: cumulative(facts.timeline.read)}]},
    options: {scales: {x: timeAxis, y: {beginAtZero: true}}}
  }));
  charts.push(new Chart(document.getElementById("errors"), {
    type: "bar",
    data: {labels: facts.errors.map((e) => String(e.code)),
           datasets: [{label: "failed messages", backgroundColor: "#d9534f", data: facts.errors.map((e) => e.count)}]},
    options: {indexAxis: "y", plugins: {legend: {display: false}}}
  }));
  for (const chart of charts) {
    const ctx = chart.canvas.getContext("2d");
    const pixels = ctx.getImageData(0, 0, chart.canvas.width, chart.canvas.height).data;
    let painted = 0;
    for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] !== 0) painted++; }
    chart.canvas.dataset.paintedPixels = String(painted);
  }
  document.body.dataset.chartsReady = String(charts.length);
})();
