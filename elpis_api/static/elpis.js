/* Elpis pages: live updates over server-sent events and the emotion chart. No dependencies. */
"use strict";
var Elpis = (function () {
  var SVG = "http://www.w3.org/2000/svg";
  var DIMENSIONS = ["valence", "arousal", "dominance"];

  function setLive(state) {
    var text = document.getElementById("live-text");
    var dot = document.getElementById("live");
    if (text) text.textContent = state;
    if (dot) dot.className = "live live-" + state;
  }

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    for (var key in attrs) node.setAttribute(key, attrs[key]);
    if (parent) parent.appendChild(node);
    return node;
  }

  /* Valence, arousal and dominance (each in -1..1) against the turn number. */
  function drawChart(svg, points) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var W = 640, H = 220, left = 40, right = 12, top = 10, bottom = 28;
    var last = points.length ? points[points.length - 1].turn : 0;
    var maxTurn = Math.max(1, last);
    function x(turn) { return left + (turn / maxTurn) * (W - left - right); }
    function y(v) { return top + (1 - (v + 1) / 2) * (H - top - bottom); }
    [-1, -0.5, 0, 0.5, 1].forEach(function (v) {
      el("line", { x1: left, x2: W - right, y1: y(v), y2: y(v), "class": v === 0 ? "axis zero" : "axis" }, svg);
      el("text", { x: left - 6, y: y(v) + 4, "class": "tick", "text-anchor": "end" }, svg).textContent = v;
    });
    el("text", { x: left - 6, y: H - 8, "class": "tick axis-label", "text-anchor": "end" }, svg).textContent = "turn";
    var step = Math.max(1, Math.ceil(maxTurn / 12));
    for (var t = 0; t <= maxTurn; t += step) {
      el("text", { x: x(t), y: H - 8, "class": "tick", "text-anchor": "middle" }, svg).textContent = t;
    }
    var note = document.getElementById("chart-note");
    if (note) note.textContent = points.length ? "" : "(no emotion update yet)";
    DIMENSIONS.forEach(function (dim) {
      var pts = points.filter(function (p) { return typeof p[dim] === "number"; });
      if (!pts.length) return;
      var d = pts.map(function (p, i) { return (i ? "L" : "M") + x(p.turn).toFixed(1) + "," + y(p[dim]).toFixed(1); });
      el("path", { d: d.join(" "), "class": "line line-" + dim, "data-points": pts.length }, svg);
      pts.forEach(function (p) {
        var c = el("circle", { cx: x(p.turn), cy: y(p[dim]), r: 3, "class": "dot dot-" + dim }, svg);
        el("title", {}, c).textContent = "turn " + p.turn + ": " + dim + " " + p[dim].toFixed(2) + (p.mood ? " (" + p.mood + ")" : "");
      });
    });
  }

  function turnContainer(turn) {
    var li = document.getElementById("turn-" + turn);
    if (li) return li.querySelector(".steps");
    li = document.createElement("li");
    li.className = "turn";
    li.id = "turn-" + turn;
    li.setAttribute("data-turn", turn);
    li.innerHTML = "<h3>Turn " + turn + "</h3><div class=\"steps\"></div>";
    document.getElementById("timeline").appendChild(li);
    return li.querySelector(".steps");
  }

  function taskPage() {
    var page = document.getElementById("task-page");
    var svg = document.getElementById("emotion-chart");
    var points = JSON.parse(document.getElementById("emotion-data").textContent || "[]");
    drawChart(svg, points);
    var lastSeq = parseInt(page.getAttribute("data-last-seq"), 10);
    if (["succeeded", "failed", "cancelled"].indexOf(page.getAttribute("data-status")) >= 0) {
      setLive("finished");
      return;
    }
    var source = new EventSource("/tasks/" + page.getAttribute("data-task") + "/events?after=" + lastSeq);
    source.onopen = function () { setLive("live"); };
    source.onerror = function () { setLive("reconnecting"); };
    source.addEventListener("step", function (ev) {
      var step = JSON.parse(ev.data);
      if (step.seq <= lastSeq) return;
      lastSeq = step.seq;
      page.setAttribute("data-last-seq", lastSeq);
      turnContainer(step.turn).insertAdjacentHTML("beforeend", step.html);
      document.getElementById("no-steps").hidden = true;
      if (step.point) {
        if (!points.length && step.before) points.push(step.before);
        points.push(step.point);
        drawChart(svg, points);
      }
    });
    source.addEventListener("task", function (ev) {
      var task = JSON.parse(ev.data);
      document.getElementById("task-header").innerHTML = task.header;
      document.getElementById("task-outcome").innerHTML = task.outcome;
      page.setAttribute("data-status", task.status);
    });
    source.addEventListener("end", function () {
      source.close();
      setLive("finished");
    });
  }

  /* The index and batch pages: the server pushes re-rendered table parts when they change. */
  function tablePage(url, finished) {
    if (finished) {
      setLive("finished");
      return;
    }
    var source = new EventSource(url);
    source.onopen = function () { setLive("live"); };
    source.onerror = function () { setLive("reconnecting"); };
    source.addEventListener("update", function (ev) {
      var data = JSON.parse(ev.data);
      var targets = { rows: "task-rows", summary: "batch-summary", batches: "batch-list" };
      for (var key in targets) {
        var node = document.getElementById(targets[key]);
        if (node && data[key] !== undefined) node.innerHTML = data[key];
      }
    });
    source.addEventListener("end", function () {
      source.close();
      setLive("finished");
    });
  }

  return { taskPage: taskPage, tablePage: tablePage, drawChart: drawChart };
})();
