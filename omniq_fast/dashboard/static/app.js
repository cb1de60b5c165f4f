// omniq-fast dashboard: live counts by polling a JSON endpoint, charts as inline SVG,
// and a confirm step for single removals. No dependencies, no network beyond this app.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var POLL_MS = 2000;

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    for (var k in attrs) node.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(node);
    return node;
  }

  // Completed (green) and failed (red) per minute as paired bars, oldest minute first.
  function drawChart(svg, series) {
    if (!svg || !series) return;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var width = svg.clientWidth || 600, height = svg.clientHeight || 160;
    var left = 36, bottom = 18, top = 8;
    var n = series.completed.length;
    var max = 4;
    for (var i = 0; i < n; i++) max = Math.max(max, series.completed[i], series.failed[i]);
    max = Math.ceil(max / 2) * 2;  // an even top keeps the middle tick a whole number
    var plotW = width - left - 4, plotH = height - top - bottom;
    var step = plotW / n, bar = Math.max(1, step / 2 - 1);
    el("line", {x1: left, y1: top + plotH, x2: width - 4, y2: top + plotH, stroke: "#c9ced8"}, svg);
    [0, 0.5, 1].forEach(function (f) {
      var y = top + plotH - f * plotH;
      el("line", {x1: left, y1: y, x2: width - 4, y2: y, stroke: "#eef0f4"}, svg);
      el("text", {x: left - 4, y: y + 3, "text-anchor": "end"}, svg).textContent =
        String(Math.round(f * max));
    });
    for (i = 0; i < n; i++) {
      var x = left + i * step;
      var hc = plotH * series.completed[i] / max, hf = plotH * series.failed[i] / max;
      if (hc > 0) el("rect", {x: x, y: top + plotH - hc, width: bar, height: hc, fill: "#1f9d55"}, svg)
        .appendChild(document.createElementNS(SVG, "title")).textContent = series.completed[i] + " completed";
      if (hf > 0) el("rect", {x: x + bar + 1, y: top + plotH - hf, width: bar, height: hf, fill: "#d64545"}, svg)
        .appendChild(document.createElementNS(SVG, "title")).textContent = series.failed[i] + " failed";
    }
    el("text", {x: left, y: height - 4}, svg).textContent = "-60 min";
    el("text", {x: width - 4, y: height - 4, "text-anchor": "end"}, svg).textContent = "now";
  }

  function badge(paused) {
    return paused ? '<span class="badge paused">paused</span>'
                  : '<span class="badge running">running</span>';
  }

  function setField(scope, key, value) {
    var cells = scope.querySelectorAll('[data-k="' + key + '"]');
    for (var i = 0; i < cells.length; i++) {
      if (key === "paused") cells[i].innerHTML = badge(value);
      else if (key === "completed_per_min") cells[i].textContent = value.toFixed(1);
      else if (key === "failure_rate") {
        cells[i].textContent = value.toFixed(1) + (cells[i].tagName === "TD" ? " %" : "");
      }
      else cells[i].textContent = String(value);
    }
  }

  function applyQueues(data) {
    var seen = 0;
    data.queues.forEach(function (row) {
      var tr = document.querySelector('tr[data-queue="' + row.queue + '"]');
      if (!tr) return;
      seen++;
      for (var key in row) if (key !== "queue") setField(tr, key, row[key]);
    });
    var note = document.getElementById("new-queues");
    if (note && seen < data.queues.length) note.classList.remove("hidden");
  }

  function applyQueue(data) {
    var main = document.querySelector("main");
    for (var key in data) if (key !== "lanes" && key !== "series") setField(main, key, data[key]);
    for (var lane in data.lanes) {
      var span = document.querySelector('[data-lane="' + lane + '"]');
      if (span) span.textContent = String(data.lanes[lane]);
    }
  }

  function poll(url, page) {
    var status = document.getElementById("live-status");
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (data) {
        if (page === "queues") applyQueues(data); else applyQueue(data);
        drawChart(document.getElementById("chart"), data.series);
        if (status) { status.className = "live on"; status.title = "live: updated " + new Date().toLocaleTimeString(); }
      })
      .catch(function () { if (status) { status.className = "live off"; status.title = "live updates failing"; } })
      .then(function () { setTimeout(function () { poll(url, page); }, POLL_MS); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var chart = document.getElementById("chart");
    if (chart) drawChart(chart, JSON.parse(chart.getAttribute("data-series")));
    var forms = document.querySelectorAll("form[data-confirm]");
    for (var i = 0; i < forms.length; i++) {
      forms[i].addEventListener("submit", function (event) {
        if (!window.confirm(this.getAttribute("data-confirm"))) event.preventDefault();
      });
    }
    var live = document.body.getAttribute("data-live");
    if (live) setTimeout(function () { poll(live, document.body.getAttribute("data-page")); }, POLL_MS);
  });
})();
