// Attached servers (real Apache httpd, nginx, lighttpd): one panel each, beside the embedded core's.
// /ws/sources sends, per source, its grid frame in an envelope naming it (0x53, name length, name,
// then mpmlab/services/grid.py's frame) and its summary as JSON with "source"; the panels' words and tables
// come as htmx fragments over /ws/live. window.mpmSources[name] exposes what tests need
// (counts, cellState, layout, frames, summary, kind).
(function () {
  "use strict";
  const panels = [...document.querySelectorAll(".source-panel[data-source]")];
  if (!panels.length || !window.mpmGrid) return;
  const byName = {};
  const dec = new TextDecoder();

  for (const el of panels) {
    const name = el.dataset.source, key = el.dataset.key, kind = el.dataset.kind;
    const q = (id) => document.getElementById(`${key}-${id}`);
    const src = byName[name] = {name, key, kind, frames: 0, summary: null, view: null, charts: null,
      counts: () => (src.view ? src.view.counts() : {}),
      cellState: (p, t) => (src.view ? src.view.cellState(p, t) : null)};
    Object.defineProperty(src, "layout", {get: () => (src.view ? src.view.layout : null)});
    const canvas = q("grid");
    if (canvas) {
      src.view = window.mpmGrid.create({canvas, wrap: q("grid-wrap"), tooltip: q("tooltip"), caption: q("grid-caption"),
        legend: q("legend")}, {downText: "no scoreboard from this source yet",
        // Apache's ExtendedStatus row for the cell, when its place in the grid is certain
        detailURL: (p, t) => `/api/sources/${encodeURIComponent(name)}/slots/${p}/${t}`,
        accept: (d) => d.detail,
        // lighttpd: a row is 50 connection slots of its one process, not a process
        captionText: kind === "lighttpd" ? (f, live) => `${f.rows * f.cols} connection slots (${f.rows} rows of ${f.cols}) · ${f.counts["_"]} free · one event-driven process` : null,
        captionSuffix: () => (src.summary && src.summary.layout && src.summary.layout.inferred ? " · row width inferred" : "")});
    }
    const subs = [];
    const ids = {};
    for (const c of ["rps", "workers", "conns", "latency"]) if (q(`ch-${c}`)) ids[c] = `${key}-ch-${c}`;
    src.charts = window.mpmChartSet({ids, history: `/api/sources/${encodeURIComponent(name)}/history`,
      specs: kind === "nginx" ? {conns: "conns-nginx"} : kind === "lighttpd" ? {conns: "conns-lighttpd"} : {}, subscribe: (push) => subs.push(push)});
    src.onSummary = (m) => { src.summary = m; if (m.point) for (const push of subs) push(m.point); };
  }
  window.mpmSources = byName;

  // no embedded core: this socket drives the "live" indicator
  window.mpmGrid.socket("/ws/sources", (ev) => {
    if (typeof ev.data === "string") {
      const m = JSON.parse(ev.data);
      if (m.type === "summary" && byName[m.source]) byName[m.source].onSummary(m);
      return;
    }
    const u8 = new Uint8Array(ev.data);
    if (u8[0] !== 0x53) return;
    const n = u8[1];
    const src = byName[dec.decode(u8.subarray(2, 2 + n))];
    if (!src || !src.view) return;
    const f = window.mpmGrid.decode(ev.data, 2 + n);
    if (!f) return;
    src.frames++;
    src.view.setFrame(f);
  }, (up) => { if (!window.mpmlab) document.body.classList.toggle("ws-up", up); });
})();
