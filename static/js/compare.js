// The compare view's small multiples: one row per series, one chart per target run side by side,
// every chart of a row on the same axes (x: the longest target run; y: the row's largest value),
// stage and switch marks dashed. Data: /runs/{id}/series (each target run's samples and marks).
(function () {
  "use strict";
  const el = document.getElementById("multiples");
  if (!el) return;
  const KINDS = ["rps", "workers", "conns", "procs", "memory", "errors", "cpu"];
  fetch(`/runs/${el.dataset.run}/series`).then((r) => r.json()).then((d) => {
    const withData = d.targets.filter((t) => t.samples.length);
    if (!withData.length) { el.innerHTML = '<div class="muted">no per-second samples in this run</div>'; return; }
    const width = Math.max(200, Math.floor((el.clientWidth - 12 * withData.length) / withData.length));
    window.mpmCompare = {rows: {}};
    for (const kind of KINDS) {
      const row = document.createElement("div");
      row.className = "multiples-row";
      row.dataset.kind = kind;
      el.appendChild(row);
      // y range shared by the row: the largest value of any of its target runs
      let yMax = 0;
      const [, spec] = window.mpmRunCharts.SERIES[kind];
      for (const t of withData) for (const s of t.samples) for (const x of spec) { const v = x[1](s); if (v != null && v > yMax) yMax = v; }
      if (!yMax && kind !== "rps") { row.remove(); continue; } // nothing recorded for it (e.g. CPU of a live recording)
      const charts = [];
      for (const t of withData) {
        const cell = document.createElement("div");
        cell.className = "multiple";
        const title = document.createElement("div");
        title.className = "mult-title"; // a target's name: text, never markup (an imported run's is anyone's)
        title.textContent = t.target + (withData.some((o) => o !== t && o.target === t.target) ? " #" + t.round : "");
        cell.appendChild(title);
        row.appendChild(cell);
        charts.push(window.mpmRunCharts.chart(cell, kind, t.samples, t.marks, {width, height: 120, xMax: d.duration, yMax: yMax * 1.1}));
      }
      window.mpmCompare.rows[kind] = {yMax, charts: charts.length};
    }
    window.mpmCompare.ready = true;
  });
})();
