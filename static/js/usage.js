// Usage charts (Chart.js from static/vendor): tokens, requests and cost per day, in the page's theme colours.
(function () {
  "use strict";
  var source = document.getElementById("usage-daily");
  if (!source || !window.Chart) return;
  var daily = JSON.parse(source.textContent);
  var css = getComputedStyle(document.documentElement);
  var primary = css.getPropertyValue("--pico-primary").trim() || "#524ed2";
  var muted = css.getPropertyValue("--pico-muted-color").trim() || "#888";
  var grid = css.getPropertyValue("--pico-muted-border-color").trim() || "#ddd";
  var labels = daily.map(function (d) { return d.date.slice(5); });
  var reduce = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  function chart(id, type, datasets) {
    var canvas = document.getElementById(id);
    if (!canvas) return;
    new window.Chart(canvas, {
      type: type,
      data: { labels: labels, datasets: datasets },
      options: {
        responsive: true, maintainAspectRatio: false, animation: reduce ? false : { duration: 300 },
        plugins: { legend: { labels: { color: muted } } },
        scales: { x: { ticks: { color: muted }, grid: { color: grid } },
                  y: { beginAtZero: true, ticks: { color: muted }, grid: { color: grid } } },
      },
    });
  }
  chart("chart-tokens", "bar", [
    { label: "input", data: daily.map(function (d) { return d.tokens_in; }), backgroundColor: primary, stack: "t" },
    { label: "output", data: daily.map(function (d) { return d.tokens_out; }), backgroundColor: muted, stack: "t" },
  ]);
  chart("chart-requests", "line", [
    { label: "chat runs", data: daily.map(function (d) { return d.runs; }), borderColor: primary, backgroundColor: primary },
    { label: "API requests", data: daily.map(function (d) { return d.api_calls; }), borderColor: muted, backgroundColor: muted },
  ]);
  chart("chart-cost", "line", [
    { label: "USD", data: daily.map(function (d) { return Number(d.cost); }), borderColor: primary, backgroundColor: primary, fill: false },
  ]);
  // Only offer the ids that fit the chosen scope.
  var scope = document.getElementById("u-scope"), which = document.getElementById("u-id");
  function sync() {
    Array.prototype.forEach.call(which.querySelectorAll("optgroup"), function (group) {
      group.hidden = group.getAttribute("data-scope") !== scope.value;
      group.disabled = group.hidden;
    });
    which.disabled = scope.value === "tenant";
  }
  if (scope && which) { scope.addEventListener("change", sync); sync(); }
})();
