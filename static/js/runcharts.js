// Charts of a stored run (uPlot), shared by the replay view (static/js/replay.js) and the compare
// view's small multiples (static/js/compare.js): one point per SecondSample, the run's marks
// (stages, rounds, MPM switches, restarts) as dashed vertical lines, an optional cursor line at the
// replay's clock. window.mpmRunCharts.SERIES names the series both views draw; lastAtOrBefore and
// sampleAt find what the clock shows.
(function () {
  "use strict";
  // axis colors from the page's theme, as the live charts' (static/js/charts.js, dashboard.css)
  const css = (name, dflt) => getComputedStyle(document.documentElement).getPropertyValue(name).trim() || dflt;
  const AXIS = {stroke: css("--chart-axis", "#8b96a5"), grid: {stroke: css("--chart-grid", "#1f2630"), width: 1},
    ticks: {stroke: css("--chart-grid", "#2a313c"), width: 1}, font: "11px system-ui, sans-serif"};
  const MARK_COLORS = {stage: "#8b96a5", round: "#6e7681", switch: "#bc8cff", restart: "#e3b341", warmup: "#39c5cf", threshold: "#f85149", note: "#6e7681"};
  const mb = (v) => (v == null ? null : v / 1048576);
  const compact = (u, vals) => vals.map((v) => (v == null ? "" : Math.abs(v) >= 1000 ? +(v / 1000).toFixed(1) + "k" : +v.toFixed(2) + ""));

  // kind -> [title, [[label, value(sample), color, fill]]]
  const SERIES = {
    rps: ["Requests / s", [["req/s", (s) => s.rps, "#58a6ff", true]]],
    workers: ["Workers: busy vs idle", [["busy", (s) => s.busy, "#3fb950", true], ["idle", (s) => s.idle, "#6e7681"]]],
    conns: ["Connections", [["server", (s) => s.connections, "#58a6ff"], ["parked keep-alive", (s) => s.parked, "#e3b341"],
      ["client", (s) => s.client_connections, "#f778ba"]]],
    procs: ["Processes / threads", [["processes", (s) => s.processes, "#a5d6ff"], ["threads", (s) => s.threads, "#bc8cff"]]],
    memory: ["Memory: PSS of the process tree (MB)", [["PSS MB", (s) => mb(s.pss_bytes), "#a5d6ff", true]]],
    errors: ["Errors / s", [["errors", (s) => s.errors, "#f85149", true]]],
    cpu: ["CPU seconds (cumulative)", [["CPU s", (s) => s.cpu_seconds, "#d29922"]]],
  };

  function markPlugin(marks) {
    return {hooks: {draw: [(u) => {
      const ctx = u.ctx, top = u.bbox.top, h = u.bbox.height;
      ctx.save();
      ctx.lineWidth = 1;
      for (const m of marks) {
        if (m.kind === "note" && m.label.startsWith("patterns: ")) continue; // a recording's pattern table, not an event
        const x = Math.round(u.valToPos(m.t, "x", true));
        if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
        ctx.strokeStyle = MARK_COLORS[m.kind] || "#8b96a5";
        ctx.setLineDash([4, 4]);
        ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + h); ctx.stroke();
        if (m.kind !== "note" || m.label.startsWith("traffic ")) {
          ctx.setLineDash([]);
          ctx.fillStyle = ctx.strokeStyle;
          ctx.font = `${10 * devicePixelRatio}px system-ui, sans-serif`;
          ctx.fillText(m.label.slice(0, 24), x + 3, top + 10 * devicePixelRatio);
        }
      }
      ctx.restore();
    }]}};
  }

  // el: the container; kind: a SERIES key; samples: SecondSample dicts; marks: Mark dicts;
  // opts: {width, height, xMax, yMax (shared axis), cursor (true: a line the caller moves with setCursor)}
  function chart(el, kind, samples, marks, opts) {
    opts = opts || {};
    const [title, spec] = SERIES[kind];
    const box = document.createElement("div");
    box.className = "card chart run-chart";
    box.dataset.kind = kind;
    box.innerHTML = `<h3>${title}</h3>`;
    const holder = document.createElement("div");
    holder.className = "chart-holder";
    box.appendChild(holder);
    el.appendChild(box);
    const xs = samples.map((s) => s.t);
    const data = [xs].concat(spec.map((s) => samples.map((p) => { const v = s[1](p); return v == null ? null : v; })));
    const yMax = opts.yMax;
    const u = new uPlot({
      width: opts.width || Math.max(220, holder.clientWidth || 300), height: opts.height || 130,
      cursor: {show: false}, legend: {show: spec.length > 1, live: false},
      scales: {x: {time: false, range: [0, Math.max(1, opts.xMax || (xs.length ? xs[xs.length - 1] : 1))]},
        y: {range: (u, min, max) => [0, Math.max(1, yMax != null ? yMax : max * 1.1)]}},
      axes: [Object.assign({}, AXIS, {values: (u, v) => v.map((x) => x + " s")}), Object.assign({}, AXIS, {size: 50, values: compact})],
      series: [{}].concat(spec.map(([label, , color, fill]) => ({label, stroke: color, width: 1.5,
        fill: fill ? color + "22" : undefined, spanGaps: false, points: {show: false}}))),
      plugins: [markPlugin(marks || [])],
    }, data, holder);
    let line = null;
    if (opts.cursor) {
      line = document.createElement("div");
      line.className = "t-cursor";
      holder.style.position = "relative";
      holder.appendChild(line);
    }
    return {
      plot: u, box,
      setCursor(t) {
        if (!line) return;
        const x = u.valToPos(t, "x") + u.bbox.left / devicePixelRatio;
        line.style.transform = `translateX(${x.toFixed(1)}px)`;
        line.style.top = (u.bbox.top / devicePixelRatio) + "px";
        line.style.height = (u.bbox.height / devicePixelRatio) + "px";
      },
    };
  }

  // the index of the last item at or before t in arr, sorted by t (by item[key] with a key), else -1
  function lastAtOrBefore(arr, t, key) {
    let lo = 0, hi = arr.length - 1, best = -1;
    while (lo <= hi) { const mid = (lo + hi) >> 1; if ((key ? arr[mid][key] : arr[mid]) <= t + 1e-9) { best = mid; lo = mid + 1; } else hi = mid - 1; }
    return best;
  }

  // the last sample at or before t (samples sorted by t)
  function sampleAt(samples, t) {
    const i = lastAtOrBefore(samples, t, "t");
    return i < 0 ? null : samples[i];
  }

  window.mpmRunCharts = {chart, lastAtOrBefore, sampleAt, SERIES};
})();
