// Charts over the last minutes (uPlot): one point a second from the summary stream, history from
// /api/history on load. Per-pattern series (latency, errors) are rebuilt when the set of patterns changes.
// window.mpmCharts is the embedded core's set; window.mpmChartSet(options) makes one for an
// attached server's panel (static/js/sources.js). A figure a source cannot show is null: a gap.
(function () {
  "use strict";
  const WINDOW = 600; // seconds kept on screen (the server keeps the same)
  const RECENT = 120; // seconds whose values set the latency chart's scale: an old spike does not flatten now
  const pad = (n) => String(n).padStart(2, "0");
  // time labels as a clock, one format for every tick (uPlot's default glues a date to the first)
  function clock(u, splits, axisIdx, space, incr) {
    return splits.map((v) => { const d = new Date(v * 1000);
      return incr < 60 ? `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}` : `${pad(d.getHours())}:${pad(d.getMinutes())}`; });
  }

  // where the MPM changed or the master restarted: a point whose generation differs from the one before
  function marksOf(points) {
    const out = [];
    for (let i = 1; i < points.length; i++) {
      const a = points[i - 1], b = points[i];
      if (b.generation == null || a.generation == null || b.generation === a.generation) continue;
      const switched = b.mpm && a.mpm && b.mpm !== a.mpm;
      out.push({t: b.t, generation: b.generation, label: switched ? `→ ${b.mpm}` : "restart",
        title: switched ? `generation ${b.generation}: ${a.mpm} → ${b.mpm}` : `generation ${b.generation}: restart`});
    }
    return out;
  }

  // a uPlot plugin: the marks as vertical lines over the plot, as elements (with a title on hover)
  function marksPlugin(getMarks) {
    function place(u) {
      let layer = u.over.querySelector(".chart-marks");
      if (!layer) { layer = document.createElement("div"); layer.className = "chart-marks"; u.over.appendChild(layer); }
      const [x0, x1] = [u.scales.x.min, u.scales.x.max];
      const html = [];
      for (const m of getMarks()) {
        if (x0 == null || m.t < x0 || m.t > x1) continue;
        const left = u.valToPos(m.t, "x");
        const side = left > u.over.clientWidth - 60 ? " left" : "";
        html.push(`<div class="chart-mark${side}" style="left:${left.toFixed(1)}px" data-generation="${m.generation}" title="${m.title}"><span>${m.label}</span></div>`);
      }
      const text = html.join("");
      if (layer.dataset.html !== text) { layer.innerHTML = text; layer.dataset.html = text; }
    }
    return {hooks: {draw: [place]}};
  }
  // axis colors from the page's theme (dashboard.css: dark, or light after prefers-color-scheme)
  const css = (name, dflt) => getComputedStyle(document.documentElement).getPropertyValue(name).trim() || dflt;
  const AXIS = {stroke: css("--chart-axis", "#8b96a5"), grid: {stroke: css("--chart-grid", "#1f2630"), width: 1},
    ticks: {stroke: css("--chart-grid", "#2a313c"), width: 1}, font: "11px system-ui, sans-serif"};

  const FIXED = {
    rps: [["requests/s", (p) => p.rps, "#58a6ff", true]],
    workers: [["busy", (p) => p.busy, "#3fb950", true], ["idle", (p) => p.idle, "#6e7681"], ["graceful", (p) => p.graceful, "#bc8cff"]],
    conns: [["reading (R)", (p) => p.R, "#f85149"], ["writing (W)", (p) => p.W, "#3fb950"], ["keep-alive in a worker (K)", (p) => p.K, "#d29922"],
      ["closing (C)", (p) => p.C, "#db61a2"], ["parked keep-alive (event)", (p) => p.parked_keep_alive, "#e3b341", false, [6, 4]],
      ["write completion (event)", (p) => p.async_writing, "#56d364", false, [6, 4]], ["lingering close (event)", (p) => p.async_closing, "#f778ba", false, [6, 4]]],
    // nginx: chart_point puts Reading/Writing in R/W and Waiting in parked_keep_alive
    "conns-nginx": [["reading", (p) => p.R, "#f85149"], ["writing", (p) => p.W, "#3fb950"],
      ["waiting (idle keep-alive)", (p) => p.parked_keep_alive, "#e3b341", false, [6, 4]], ["active", (p) => p.conns_total, "#58a6ff"]],
    // lighttpd: its keep-alive connections (k) hold no worker; R/W/C are its states mapped (mpmcore/sources/lighttpd.py)
    "conns-lighttpd": [["reading (R)", (p) => p.R, "#f85149"], ["writing (W)", (p) => p.W, "#3fb950"],
      ["idle keep-alive (k)", (p) => p.K, "#e3b341", false, [6, 4]], ["closing (C)", (p) => p.C, "#db61a2"],
      ["open connections", (p) => p.conns_total, "#58a6ff"]],
    memory: [["PSS MB", (p) => p.pss_mb, "#a5d6ff", true]],
  };

  // options: {ids: {rps: "ch-rps", ...} (which charts, and their elements), history: URL,
  //           subscribe(cb) (called with each new point), specs: {conns: "conns-nginx"} (overrides)}
  function createSet(options) {
    const points = [];
    const charts = {};
    const ids = options.ids;
    const specs = options.specs || {};

    function labels() {
      const s = new Set();
      for (const p of points) for (const k of Object.keys(p.traffic || {})) s.add(k);
      return [...s].sort();
    }

    // ls: the pattern labels in the points, found once per render for both per-pattern charts
    function seriesFor(kind, ls) {
      const fixed = FIXED[specs[kind] || kind];
      if (fixed) return fixed;
      const color = window.mpmGrid.patternColor; // scoreboard.js loads first
      if (kind === "latency") {
        const out = [];
        for (const l of ls) {
          out.push([`${l} p50`, (p) => (p.traffic && p.traffic[l] ? p.traffic[l].p50 : null), color(l)]);
          out.push([`${l} p99`, (p) => (p.traffic && p.traffic[l] ? p.traffic[l].p99 : null), color(l), false, [5, 4]]);
        }
        return out;
      }
      return ls.map((l) => [l, (p) => (p.traffic && p.traffic[l] ? p.traffic[l].errors : null), color(l)]);
    }

    // the chart of ``kind`` for the series ``spec`` (made again only when its series changed)
    function build(kind, spec) {
      const el = document.getElementById(ids[kind]);
      if (!el) return;
      const key = spec.map((s) => s[0]).join("|");
      if (charts[kind] && charts[kind].key === key) return charts[kind];
      if (charts[kind]) charts[kind].plot.destroy();
      el.innerHTML = "";
      const width = Math.max(240, el.clientWidth);
      const yRange = kind === "latency" ? recentRange : (u, min, max) => [0, Math.max(1, max * 1.1)];
      const opts = {
        width, height: 150, cursor: {points: {size: 5}},
        // hovering shows every series' value at that second in the legend
        legend: {show: true, live: true},
        scales: {x: {time: true}, y: {range: yRange}},
        axes: [Object.assign({}, AXIS, {space: 70, values: clock}), Object.assign({}, AXIS, {size: 54})],
        plugins: [marksPlugin(() => set.marks)],
        series: [{label: "time", value: (u, v) => (v == null ? "--" : clock(u, [v], 0, 0, 1)[0])}].concat(spec.map(([label, , color, fill, dash]) => ({label, stroke: color, width: 1.5, dash,
          fill: fill ? color + "22" : undefined, spanGaps: false, points: {show: false}}))),
      };
      if (!spec.length) {
        el.innerHTML = '<div class="chart-empty">no traffic pattern has run yet</div>';
        charts[kind] = {key, plot: {destroy() {}, setData() {}, setSize() {}}, empty: true};
        return charts[kind];
      }
      charts[kind] = {key, plot: new uPlot(opts, data(spec), el)};
      return charts[kind];
    }

    // the latency scale: the largest value of the last RECENT seconds (older spikes run off the top)
    function recentRange(u) {
      const xs = u.data[0];
      let max = 0;
      if (xs.length) {
        const cut = xs[xs.length - 1] - RECENT;
        for (let s = 1; s < u.data.length; s++) {
          const ys = u.data[s];
          for (let i = ys.length - 1; i >= 0 && xs[i] >= cut; i--) if (ys[i] != null && ys[i] > max) max = ys[i];
        }
      }
      return [0, Math.max(1, max * 1.15)];
    }

    function data(spec) {
      const xs = points.map((p) => p.t);
      return [xs].concat(spec.map((s) => points.map((p) => { const v = s[1](p); return v == null ? null : v; })));
    }

    function render() {
      set.marks = marksOf(points);
      const ls = labels();
      for (const kind of Object.keys(ids)) {
        const spec = seriesFor(kind, ls);
        const c = build(kind, spec);
        if (c && !c.empty) c.plot.setData(data(spec));
      }
    }

    function push(p) {
      if (points.length && p.t <= points[points.length - 1].t) return;
      points.push(p);
      while (points.length > WINDOW) points.shift();
      render();
    }

    const set = {points, push, render, marks: [], charts};
    fetch(options.history).then((r) => r.json()).then((h) => {
      for (const p of h.points) if (!points.length || p.t > points[points.length - 1].t) points.push(p);
      render();
      if (options.subscribe) options.subscribe(push);
    }).catch(() => { render(); if (options.subscribe) options.subscribe(push); });
    let rt = null;
    window.addEventListener("resize", () => {
      clearTimeout(rt);
      rt = setTimeout(() => {
        for (const kind in charts) {
          const el = document.getElementById(ids[kind]);
          if (el && !charts[kind].empty) charts[kind].plot.setSize({width: el.clientWidth, height: 150});
        }
      }, 150);
    });
    return set;
  }

  window.mpmChartSet = createSet;
  if (document.getElementById("ch-rps")) {
    window.mpmCharts = createSet({
      ids: {rps: "ch-rps", workers: "ch-workers", conns: "ch-conns", latency: "ch-latency", errors: "ch-errors", memory: "ch-memory"},
      history: "/api/history",
      subscribe: (push) => { if (window.mpmlab) window.mpmlab.on("summary", (m) => { if (m.point) push(m.point); }); },
    });
  }
})();
