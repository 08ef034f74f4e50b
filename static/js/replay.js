// The replay view: one clock for every chosen target run; play, pause, speed, a time slider. Each
// target's grid is drawn by scoreboard.js' view from the stored frames (the same binary layout as
// the live websocket's), its tiles from the SecondSample at the clock, its charts with a cursor line.
// Frames come in batches of CHUNK seconds (mpmlab/services/replay.py's layout), fetched around the
// clock and kept, so scrubbing redraws from memory. window.mpmReplay exposes the clock and, per
// target run, the frame shown (its t, seq and bytes) for tests: each card carries data-t/data-seq.
(function () {
  "use strict";
  const R = window.REPLAY;
  const CHUNK = 10; // seconds of frames per batch request (~100 frames: 0.9 MB at 4,096 slots)
  const AHEAD = 2; // batches fetched ahead of the clock while playing
  const $ = (id) => document.getElementById(id);
  const play = $("play"), speedSel = $("speed"), slider = $("slider"), clock = $("clock"), stageNow = $("stage-now");
  const replay = window.mpmReplay = {t: 0, duration: 0, playing: false, speed: 1, ready: false, targets: {}, draws: 0};

  function parseBatch(buf) {
    const dv = new DataView(buf);
    if (dv.getUint32(0, true) !== 0x5250) return [];
    const n = dv.getUint32(4, true), out = [];
    let o = 8;
    for (let i = 0; i < n; i++) {
      const t = dv.getFloat64(o, true), len = dv.getUint32(o + 8, true);
      out.push({t, buf, off: o + 12, len});
      o += 12 + len;
    }
    return out;
  }

  const {lastAtOrBefore, sampleAt} = window.mpmRunCharts; // runcharts.js loads first

  const esc = (v) => String(v).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})[c]);
  function fmt(v, digits) { return v == null ? "–" : (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(digits == null ? 1 : digits)) : String(v)); }

  function makeTarget(tt) {
    const k = `rt-${tt.id}`;
    // a recording's pattern tables over time (mpmlab/services/experiments.py: PATTERNS_MARK)
    const tables = tt.marks.filter((m) => m.kind === "note" && m.label.startsWith("patterns: "))
      .map((m) => ({t: m.t, names: JSON.parse(m.label.slice(10))}));
    const patternsAt = () => {
      const at = tg.shown ? tg.shown.t : replay.t;
      const i = lastAtOrBefore(tables, at, "t");
      return i < 0 ? [] : tables[i].names;
    };
    const view = window.mpmGrid.create({canvas: $(`${k}-grid`), wrap: $(`${k}-grid-wrap`), tooltip: $(`${k}-tooltip`),
      caption: $(`${k}-grid-caption`), legend: $(`${k}-legend`)}, {downText: "the server was down at this time",
      patterns: patternsAt});
    const tg = {id: tt.id, target: tt.target, el: $(k), view, times: tt.frame_times, samples: tt.samples, marks: tt.marks,
      logs: tt.logs || [], logShown: -2, hasPatterns: tables.length > 0, patternsAt,
      chunks: new Map(), frames: [], byT: new Map(), shown: null, charts: []};
    const charts = $(`${k}-charts`);
    for (const kind of ["rps", "workers", "conns", "memory"]) {
      tg.charts.push(window.mpmRunCharts.chart(charts, kind, tt.samples, tt.marks, {cursor: true, xMax: replay.duration}));
    }
    return tg;
  }

  // the batch holding time t: fetched once (a promise kept per chunk)
  function load(tg, k) {
    if (k < 0 || k * CHUNK > replay.duration + CHUNK) return Promise.resolve();
    if (tg.chunks.has(k)) return tg.chunks.get(k);
    const p = fetch(`/api/runs/${R.run}/targets/${tg.id}/frames?t0=${k * CHUNK}&t1=${(k + 1) * CHUNK}`)
      .then((r) => (r.ok ? r.arrayBuffer() : Promise.reject(new Error(`frames: HTTP ${r.status}`))))
      .then((buf) => {
        let added = 0;
        for (const f of parseBatch(buf)) if (!tg.byT.has(f.t)) { tg.byT.set(f.t, f); added++; }
        if (added) tg.frames = [...tg.byT.values()].sort((a, b) => a.t - b.t);
        render();
      })
      .catch((e) => { tg.chunks.delete(k); console.warn(String(e)); });
    tg.chunks.set(k, p);
    return p;
  }

  function drawTarget(tg, t) {
    const i = lastAtOrBefore(tg.times, t);
    const empty = $(`rt-${tg.id}-empty`);
    if (i < 0) {
      empty.hidden = false; // no frame recorded yet at this time (or none at all)
    } else {
      empty.hidden = true;
      const want = tg.times[i];
      const k = Math.floor(want / CHUNK);
      load(tg, k);
      // the next batch too (the clock moves forward when playing and mostly when scrubbing), and more while playing
      for (let a = 1; a <= (replay.playing ? AHEAD : 1); a++) load(tg, k + a);
      const j = lastAtOrBefore(tg.frames, want, "t");
      const f = j >= 0 ? tg.frames[j] : null;
      // the exact frame for t once its batch is in; until then the nearest older one stays drawn
      if (f && f !== tg.shown && (Math.abs(f.t - want) < 1e-6 || !tg.shown || f.t > tg.shown.t)) {
        const decoded = window.mpmGrid.decode(f.buf, f.off);
        if (decoded) {
          tg.view.setFrame(decoded);
          tg.shown = f;
          tg.el.dataset.t = f.t.toFixed(3);
          tg.el.dataset.seq = String(decoded.seq);
          tg.el.dataset.exact = Math.abs(f.t - want) < 1e-6 ? "1" : "0";
          replay.draws++;
        }
      } else if (f && f === tg.shown) {
        tg.el.dataset.exact = Math.abs(f.t - want) < 1e-6 ? "1" : "0";
      }
    }
    const s = sampleAt(tg.samples, t);
    tiles(tg, s);
    logLines(tg, t);
    for (const c of tg.charts) c.setCursor(t);
    return s;
  }

  function tiles(tg, s) {
    const el = $(`rt-${tg.id}-tiles`);
    if (!s) { el.innerHTML = '<span class="muted small">no sample yet at this time</span>'; return; }
    const key = s.t;
    if (el.dataset.at === String(key)) return;
    el.dataset.at = String(key);
    const mbv = (b) => (b == null ? "–" : (b / 1048576).toFixed(1) + " MB");
    const items = [["req/s", fmt(s.rps)], ["errors", fmt(s.errors, 0)], ["busy", fmt(s.busy)], ["idle", fmt(s.idle)],
      ["processes", fmt(s.processes)], ["threads", fmt(s.threads)], ["connections", fmt(s.connections)],
      ["parked keep-alive", fmt(s.parked)], ["memory", mbv(s.pss_bytes)], ["CPU s", fmt(s.cpu_seconds, 2)]];
    el.innerHTML = items.map(([k, v]) => `<div class="tile"><span>${k}</span><b>${esc(v)}</b><small>${k === "req/s" ? "stage " + esc(s.stage || "–") : ""}</small></div>`).join("");
  }

  // the last LOG_LINES error-log lines at or before t
  const LOG_LINES = 8;
  function logLines(tg, t) {
    const el = $(`rt-${tg.id}-log`);
    const i = lastAtOrBefore(tg.logs, t, "t");
    if (i === tg.logShown) return;
    tg.logShown = i;
    el.hidden = !tg.logs.length;
    el.textContent = "";
    for (const l of tg.logs.slice(Math.max(0, i - LOG_LINES + 1), i + 1)) {
      const d = document.createElement("div");
      d.className = "ll";
      d.textContent = `${l.t.toFixed(1)} s  ${l.text}`;
      el.appendChild(d);
    }
    if (i < 0 && tg.logs.length) el.innerHTML = '<span class="muted small">no error-log line yet at this time</span>';
  }

  let scheduled = false;
  function render() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      const t = replay.t;
      let stage = "";
      for (const id in replay.targets) { const s = drawTarget(replay.targets[id], t); if (s && !stage) stage = s.stage; }
      clock.textContent = `${t.toFixed(1)} s / ${replay.duration.toFixed(1)} s`;
      clock.dataset.t = t.toFixed(3);
      stageNow.textContent = stage ? `stage: ${stage}` : "";
      if (document.activeElement !== slider || replay.playing) slider.value = String(replay.duration ? Math.round(1000 * t / replay.duration) : 0);
    });
  }

  function seek(t) {
    replay.t = Math.max(0, Math.min(replay.duration, t));
    render();
  }
  replay.seek = seek;
  // true once the clock is drawn and every target shows the exact frame for the clock (tests, benchmarks)
  replay.settled = () => !scheduled && Object.values(replay.targets).every((tg) => {
    const i = lastAtOrBefore(tg.times, replay.t);
    return i < 0 || (tg.shown && Math.abs(tg.shown.t - tg.times[i]) < 1e-6);
  });
  replay.shownBytes = (id) => {
    const tg = replay.targets[id];
    return tg && tg.shown ? Array.from(new Uint8Array(tg.shown.buf, tg.shown.off, tg.shown.len)) : null;
  };

  let last = 0;
  function tick(now) {
    if (!replay.playing) return;
    const dt = last ? (now - last) / 1000 : 0;
    last = now;
    replay.t += dt * replay.speed;
    if (replay.t >= replay.duration) { replay.t = replay.duration; setPlaying(false); }
    render();
    requestAnimationFrame(tick);
  }
  function setPlaying(on) {
    replay.playing = on;
    play.textContent = on ? "Pause" : "Play";
    play.setAttribute("aria-label", on ? "pause" : "play");
    if (on) {
      if (replay.t >= replay.duration) replay.t = 0;
      last = 0;
      requestAnimationFrame(tick);
    }
  }
  replay.play = () => setPlaying(true);
  replay.pause = () => setPlaying(false);
  play.addEventListener("click", () => setPlaying(!replay.playing));
  speedSel.addEventListener("change", () => { replay.speed = parseFloat(speedSel.value) || 1; });
  // color by state or by traffic pattern (recordings carry the pattern table; experiment frames do not)
  for (const b of document.querySelectorAll("#color-mode [data-mode]")) {
    b.addEventListener("click", () => {
      for (const o of document.querySelectorAll("#color-mode [data-mode]")) o.classList.toggle("on", o === b);
      for (const id in replay.targets) replay.targets[id].view.setMode(b.dataset.mode);
    });
  }
  slider.addEventListener("input", () => seek(replay.duration * parseInt(slider.value, 10) / 1000));
  // keys: space plays/pauses, arrows step 1 s (with shift 10 s), Home/End jump
  document.addEventListener("keydown", (e) => {
    if (e.target.closest && e.target.closest("input, select, textarea") && e.target !== slider) return;
    if (e.key === " ") { e.preventDefault(); setPlaying(!replay.playing); }
    else if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      e.preventDefault();
      seek(replay.t + (e.key === "ArrowRight" ? 1 : -1) * (e.shiftKey ? 10 : 1));
    } else if (e.key === "Home") { e.preventDefault(); seek(0); }
    else if (e.key === "End") { e.preventDefault(); seek(replay.duration); }
  });

  fetch(`/api/runs/${R.run}/timeline?targets=${R.targets.join(",")}`).then((r) => r.json()).then((tl) => {
    replay.duration = tl.duration;
    for (const tt of tl.targets) replay.targets[tt.id] = makeTarget(tt);
    const mode = document.getElementById("color-mode");
    if (mode) mode.hidden = !Object.values(replay.targets).some((tg) => tg.hasPatterns);
    replay.ready = true;
    seek(0);
  });
})();
