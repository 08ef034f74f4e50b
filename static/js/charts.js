// Charts over the last minutes (uPlot): one point a second from the summary stream, history from
// /api/history on load. Per-pattern series (latency, errors) are rebuilt when the set of patterns changes.
(function () {
  "use strict";
  const WINDOW = 600; // seconds kept on screen (the server keeps the same)
  const points = [];
  const charts = {};
  const AXIS = {stroke: "#8b96a5", grid: {stroke: "#1f2630", width: 1}, ticks: {stroke: "#2a313c", width: 1}, font: "11px system-ui, sans-serif"};

  const FIXED = {
    "ch-rps": [["requests/s", (p) => p.rps, "#58a6ff", true]],
    "ch-workers": [["busy", (p) => p.busy, "#3fb950", true], ["idle", (p) => p.idle, "#6e7681"], ["graceful", (p) => p.graceful, "#bc8cff"]],
    "ch-conns": [["reading (R)", (p) => p.R, "#f85149"], ["writing (W)", (p) => p.W, "#3fb950"], ["keep-alive in a worker (K)", (p) => p.K, "#d29922"],
      ["closing (C)", (p) => p.C, "#db61a2"], ["parked keep-alive (event)", (p) => p.parked_keep_alive, "#e3b341", false, [6, 4]],
      ["write completion (event)", (p) => p.async_writing, "#56d364", false, [6, 4]], ["lingering close (event)", (p) => p.async_closing, "#f778ba", false, [6, 4]]],
    "ch-memory": [["PSS MB", (p) => p.pss_mb, "#a5d6ff", true]],
  };

  function labels() {
    const s = new Set();
    for (const p of points) for (const k of Object.keys(p.traffic || {})) s.add(k);
    return [...s].sort();
  }

  function seriesFor(id) {
    if (FIXED[id]) return FIXED[id];
    const color = (l) => (window.mpmlab ? window.mpmlab.patternColor(l) : "#58a6ff");
    const ls = labels();
    if (id === "ch-latency") {
      const out = [];
      for (const l of ls) {
        out.push([`${l} p50`, (p) => (p.traffic && p.traffic[l] ? p.traffic[l].p50 : null), color(l)]);
        out.push([`${l} p99`, (p) => (p.traffic && p.traffic[l] ? p.traffic[l].p99 : null), color(l), false, [5, 4]]);
      }
      return out;
    }
    return ls.map((l) => [l, (p) => (p.traffic && p.traffic[l] ? p.traffic[l].errors : null), color(l)]);
  }

  function build(id) {
    const el = document.getElementById(id);
    if (!el) return;
    const spec = seriesFor(id);
    const key = spec.map((s) => s[0]).join("|");
    if (charts[id] && charts[id].key === key) return charts[id];
    if (charts[id]) charts[id].plot.destroy();
    el.innerHTML = "";
    const width = Math.max(240, el.clientWidth);
    const opts = {
      width, height: 150, cursor: {points: {size: 5}}, legend: {show: true, live: false},
      scales: {x: {time: true}, y: {range: (u, min, max) => [0, Math.max(1, max * 1.1)]}},
      axes: [Object.assign({}, AXIS, {space: 60}), Object.assign({}, AXIS, {size: 54})],
      series: [{}].concat(spec.map(([label, , color, fill, dash]) => ({label, stroke: color, width: 1.5, dash,
        fill: fill ? color + "22" : undefined, spanGaps: false, points: {show: false}}))),
    };
    if (!spec.length) {
      el.innerHTML = '<div class="chart-empty">no traffic pattern has run yet</div>';
      charts[id] = {key, plot: {destroy() {}, setData() {}, setSize() {}}, empty: true};
      return charts[id];
    }
    charts[id] = {key, plot: new uPlot(opts, data(spec), el)};
    return charts[id];
  }

  function data(spec) {
    const xs = points.map((p) => p.t);
    return [xs].concat(spec.map((s) => points.map((p) => { const v = s[1](p); return v == null ? null : v; })));
  }

  function render() {
    for (const id of ["ch-rps", "ch-workers", "ch-conns", "ch-latency", "ch-errors", "ch-memory"]) {
      const c = build(id);
      if (c && !c.empty) c.plot.setData(data(seriesFor(id)));
    }
  }

  function push(p) {
    points.push(p);
    while (points.length > WINDOW) points.shift();
    render();
  }

  window.mpmCharts = {points, push, render};
  fetch("/api/history").then((r) => r.json()).then((h) => {
    for (const p of h.points) points.push(p);
    render();
    if (window.mpmlab) window.mpmlab.on("summary", (m) => {
      if (m.point && (!points.length || m.point.t > points[points.length - 1].t)) push(m.point);
    });
  }).catch(() => render());
  let rt = null;
  window.addEventListener("resize", () => {
    clearTimeout(rt);
    rt = setTimeout(() => { for (const id in charts) { const el = document.getElementById(id); if (el && !charts[id].empty) charts[id].plot.setSize({width: el.clientWidth, height: 150}); } }, 150);
  });
})();
