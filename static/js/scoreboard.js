// The scoreboard canvas: decodes the binary frames of /ws/scoreboard (layout in mpmlab/services/grid.py) and
// draws one cell per worker slot. Redraws only the cells that changed unless the layout did.
// window.mpmlab exposes what tests and benchmarks need (lastFrameAt, cellState, counts, layout).
// window.mpmGrid.create(elements, options) makes the same view for an attached server's panel
// (static/js/sources.js): its frames have the same layout (mpmcore.sources.attach.grid_frame).
(function () {
  "use strict";
  const LETTERS = [".", "S", "_", "R", "W", "K", "L", "D", "C", "G", "I"];
  const NAMES = ["Open slot with no current process", "Starting up", "Waiting for Connection", "Reading Request",
    "Sending Reply", "Keepalive (read)", "Logging", "DNS Lookup", "Closing connection", "Gracefully finishing",
    "Idle cleanup of worker"];
  const CSS = getComputedStyle(document.documentElement);
  const COLORS = ["dead", "starting", "ready", "read", "write", "keepalive", "log", "dns", "closing", "graceful", "idle-kill"]
    .map((n) => CSS.getPropertyValue("--st-" + n).trim() || "#888");
  const INK = ["#4b5563", "#0b0f14", "#8b96a5", "#0b0f14", "#0b0f14", "#0b0f14", "#0b0f14", "#0b0f14", "#0b0f14", "#0b0f14", "#0b0f14"];
  const PATTERN_COLORS = {steady: "#58a6ff", burst: "#f778ba", browsers: "#d29922", ajax: "#3fb950", slowloris: "#f85149",
    "slow-post": "#ff9e64", "slow-read": "#a5d6ff", cpu: "#bc8cff", io: "#39c5cf"};
  const PALETTE = ["#58a6ff", "#f778ba", "#d29922", "#3fb950", "#f85149", "#ff9e64", "#a5d6ff", "#bc8cff", "#39c5cf", "#e3b341"];
  const ROW_ALIVE = 1, ROW_STOPPING = 2, ROW_OLD_GEN = 4, ROW_NOT_ACCEPTING = 8;
  const MPMS = ["prefork", "worker", "event"];

  function patternColor(label) {
    if (!label) return "#6e7681";
    if (PATTERN_COLORS[label]) return PATTERN_COLORS[label];
    let h = 5381;
    for (let i = 0; i < label.length; i++) h = ((h << 5) + h + label.charCodeAt(i)) | 0;
    return PALETTE[Math.abs(h) % PALETTE.length];
  }

  function esc(s) { return String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})[c]); }

  // -- decoding --------------------------------------------------------------------------------
  function decode(buf, offset) {
    const o0 = offset || 0;
    const dv = new DataView(buf, o0);
    if (dv.getUint8(0) !== 0x4d || dv.getUint8(1) !== 1) return null;
    const mpm = dv.getUint8(2), seq = dv.getUint32(4, true), t = dv.getFloat64(8, true);
    const gen = dv.getUint32(16, true), rows = dv.getUint16(20, true), cols = dv.getUint16(22, true);
    const tpc = dv.getUint16(24, true);
    const n = rows * cols;
    let o = 28;
    const status = new Uint8Array(buf, o0 + o, n); o += n;
    const pat = new Uint8Array(buf, o0 + o, n); o += n;
    const rowFlags = new Uint8Array(buf, o0 + o, rows); o += rows;
    const pids = new Array(rows), gens = new Array(rows);
    for (let i = 0; i < rows; i++) pids[i] = dv.getUint32(o + 4 * i, true);
    o += 4 * rows;
    for (let i = 0; i < rows; i++) gens[i] = dv.getUint32(o + 4 * i, true);
    const counts = {};
    for (const l of LETTERS) counts[l] = 0;
    for (let i = 0; i < n; i++) counts[LETTERS[status[i]] || "?"]++;
    return {mpm, down: mpm === 255, seq, t, gen, rows, cols, tpc, status, pat, rowFlags, pids, gens, counts};
  }

  // -- one grid view ---------------------------------------------------------------------------
  // els: {canvas, wrap, tooltip, caption, legend, panel (optional: the pinned-slot panel)}
  // opts: {detailURL(p, t) (optional: where a slot's details are), accept(d) (optional: whether an
  //        answer has any), downText, patterns() (table), captionSuffix(), captionText(f, live) (optional:
//        the caption's text for a grid that is not processes x threads)}
  function createView(els, opts) {
    const {canvas, wrap, tooltip, caption, legend, panel} = els;
    const ctx = canvas.getContext("2d");
    opts = opts || {};
    const view = {mode: "state", layout: null};
    let frame = null, prev = null, full = true, geo = null, pending = false, hover = null, pinned = null;
    let kb = null; // the keyboard's cell [p, t] while the grid has the focus
    Object.defineProperty(view, "frame", {get: () => frame});
    // the legend's count chips, found once (the legend itself is never replaced)
    const chips = legend ? [...legend.querySelectorAll("[data-count]")] : [];
    const patterns = () => (opts.patterns ? opts.patterns() : []);

    function layout(f) {
      const width = Math.max(320, wrap.clientWidth);
      const single = f.cols === 1; // prefork: one cell per process, wrapping
      let label = 0, cell, perLine, lines;
      if (single) {
        cell = f.rows > 512 ? 14 : 22;
        perLine = Math.max(1, Math.floor(width / cell));
        lines = Math.ceil(f.rows / perLine);
      } else {
        label = width > 700 ? 132 : 72;
        cell = Math.floor((width - label) / f.cols);
        cell = Math.max(5, Math.min(24, cell));
        perLine = f.cols;
        lines = f.rows;
      }
      const height = Math.max(cell, lines * cell);
      return {single, label, cell, perLine, lines, width, height, rows: f.rows, cols: f.cols};
    }

    function resize(g) {
      const dpr = window.devicePixelRatio || 1;
      canvas.style.width = g.width + "px";
      canvas.style.height = g.height + "px";
      canvas.width = Math.round(g.width * dpr);
      canvas.height = Math.round(g.height * dpr);
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    }

    function cellXY(g, p, t) {
      if (g.single) return [(p % g.perLine) * g.cell, Math.floor(p / g.perLine) * g.cell];
      return [g.label + t * g.cell, p * g.cell];
    }

    function cellColor(f, i) {
      const st = f.status[i];
      if (view.mode === "pattern") {
        if (st === 0) return COLORS[0];
        if (st === 1 || st === 2) return "#1f2630";
        const p = f.pat[i];
        return p ? patternColor(patterns()[p - 1]) : "#6e7681";
      }
      return COLORS[st] || "#888";
    }

    function drawCell(f, g, p, t) {
      const i = p * f.cols + t;
      const [x, y] = cellXY(g, p, t);
      const gap = g.cell >= 10 ? 2 : 1;
      ctx.fillStyle = "#0d1117";
      ctx.fillRect(x, y, g.cell, g.cell);
      ctx.fillStyle = cellColor(f, i);
      ctx.fillRect(x, y, g.cell - gap, g.cell - gap);
      const st = f.status[i];
      if (g.cell >= 12 && st !== 0) {
        ctx.fillStyle = view.mode === "pattern" && st > 2 ? "#0b0f14" : INK[st];
        ctx.fillText(LETTERS[st], x + (g.cell - gap) / 2, y + (g.cell - gap) / 2 + 0.5);
      }
      if (kb && kb[0] === p && kb[1] === t && document.activeElement === canvas) {
        ctx.strokeStyle = "#4da3ff";
        ctx.lineWidth = 2;
        ctx.strokeRect(x + 1, y + 1, g.cell - gap - 2, g.cell - gap - 2);
      }
      if (pinned && pinned[0] === p && pinned[1] === t) {
        ctx.strokeStyle = "#ffffff";
        ctx.lineWidth = 2;
        ctx.strokeRect(x + 1, y + 1, g.cell - gap - 2, g.cell - gap - 2);
      }
    }

    function drawLabel(f, g, p) {
      const y = p * g.cell;
      ctx.fillStyle = "#0d1117";
      ctx.fillRect(0, y, g.label, g.cell);
      const fl = f.rowFlags[p];
      if (!(fl & ROW_ALIVE)) {
        ctx.fillStyle = "#3b4450";
        ctx.textAlign = "right";
        ctx.fillText(String(p), g.label - 6, y + g.cell / 2);
        return;
      }
      if (fl & ROW_OLD_GEN || fl & ROW_STOPPING) {
        ctx.fillStyle = COLORS[9];
        ctx.fillRect(0, y + 1, 3, g.cell - 2);
      }
      if (fl & ROW_NOT_ACCEPTING) {
        ctx.fillStyle = "#f85149";
        ctx.beginPath();
        ctx.arc(9, y + g.cell / 2, Math.min(3, g.cell / 4), 0, 6.3);
        ctx.fill();
      }
      ctx.textAlign = "right";
      ctx.fillStyle = fl & (ROW_OLD_GEN | ROW_STOPPING) ? "#9d8ec7" : "#8b96a5";
      const pid = f.pids[p] ? f.pids[p] : "?";
      const text = g.label > 100 ? `${p} · ${pid} · g${f.gens[p]}` : `${p}·g${f.gens[p]}`;
      ctx.fillText(text, g.label - 6, y + g.cell / 2);
    }

    function draw() {
      pending = false;
      const f = frame;
      if (!f) return;
      if (f.down) {
        geo = null;
        hover = null;
        tooltip.hidden = true;
        canvas.style.height = "60px";
        ctx.clearRect(0, 0, canvas.width, canvas.height);
        caption.textContent = opts.downText || "embedded server not reachable";
        return;
      }
      const g = layout(f);
      const same = geo && prev && !full && g.width === geo.width && g.rows === geo.rows && g.cols === geo.cols && g.cell === geo.cell;
      if (!same) {
        geo = g;
        resize(g);
        ctx.clearRect(0, 0, g.width, g.height);
      }
      const fontPx = Math.max(8, Math.floor(g.cell * 0.62));
      ctx.textBaseline = "middle";
      if (!g.single) {
        ctx.font = `${Math.min(12, Math.max(9, g.cell - 3))}px ui-monospace, SFMono-Regular, Menlo, monospace`;
        for (let p = 0; p < f.rows; p++) {
          if (!same || f.rowFlags[p] !== prev.rowFlags[p] || f.pids[p] !== prev.pids[p] || f.gens[p] !== prev.gens[p]) drawLabel(f, g, p);
        }
      }
      ctx.font = `600 ${fontPx}px ui-monospace, SFMono-Regular, Menlo, monospace`;
      ctx.textAlign = "center";
      const n = f.rows * f.cols;
      for (let i = 0; i < n; i++) {
        if (same && f.status[i] === prev.status[i] && f.pat[i] === prev.pat[i]) continue;
        drawCell(f, g, Math.floor(i / f.cols), i % f.cols);
      }
      full = false;
      prev = f;
      const slots = f.counts;
      const live = n - slots["."];
      caption.textContent = (opts.captionText ? opts.captionText(f, live) : g.single
        ? `${f.rows} process slots · ${live} live · one cell per process (prefork)`
        : `${f.rows} process slots × ${f.cols} threads · ${live} live slots`) + (opts.captionSuffix ? opts.captionSuffix() : "");
      view.layout = {rows: f.rows, cols: f.cols, single: g.single, mpm: MPMS[f.mpm], cell: g.cell, label: g.label};
      for (const chip of chips) {
        const n = slots[chip.dataset.count] || 0;
        if (chip.textContent !== String(n)) chip.textContent = n;
        // every chip, also one that was 0 from the start (it used to change only with its count)
        chip.parentNode.classList.toggle("zero", !n);
      }
      if (hover && hover[0] < f.rows && hover[1] < f.cols) showTooltip(hover[0], hover[1], hover[2], hover[3], false);
      else if (hover) { hover = null; tooltip.hidden = true; } // the layout changed under the mouse
    }

    function schedule() {
      if (!pending) {
        pending = true;
        requestAnimationFrame(draw);
      }
    }

    // -- hover and pinned slot ---------------------------------------------------------------
    function cellAt(ev) {
      if (!geo || !frame) return null;
      const r = canvas.getBoundingClientRect();
      const x = ev.clientX - r.left, y = ev.clientY - r.top;
      let p, t;
      if (geo.single) {
        const col = Math.floor(x / geo.cell), line = Math.floor(y / geo.cell);
        if (col >= geo.perLine) return null;
        p = line * geo.perLine + col; t = 0;
      } else {
        if (x < geo.label) return null;
        p = Math.floor(y / geo.cell); t = Math.floor((x - geo.label) / geo.cell);
      }
      if (p < 0 || t < 0 || p >= frame.rows || t >= frame.cols) return null;
      return [p, t];
    }

    const detailCache = new Map();
    let fetchTimer = null;
    function fetchDetail(p, t, cb) {
      if (!opts.detailURL) return;
      fetch(opts.detailURL(p, t)).then((r) => (r.ok ? r.json() : null)).then((d) => {
        if (d && (!opts.accept || opts.accept(d))) { detailCache.set(`${p}/${t}`, d); cb(d); }
      }).catch(() => {});
    }

    function detailHTML(p, t, d) {
      const f = frame;
      const i = p * f.cols + t, st = f.status[i];
      const pat = f.pat[i] ? patterns()[f.pat[i] - 1] : (d && d.pattern) || "";
      const rows = [
        ["slot", `${p}${f.cols > 1 ? " / thread " + t : ""}`],
        ["pid", (d && d.pid) || f.pids[p] || "–"], ["generation", d && d.generation != null ? d.generation : f.gens[p]],
      ];
      if (d) {
        if (d.seconds_in_state != null) rows.push(["in state", d.seconds_in_state + " s"]);
        if (d.since_request_s != null) rows.push(["since request start", d.since_request_s + " s"]);
        if (d.request) rows.push(["request", d.request]);
        if (d.client) rows.push(["client", d.client]);
        if (d.conn_count != null) rows.push(["requests", `${d.conn_count} this connection · ${d.access_count} this slot`]);
        if (!d.request && d.last_request) rows.push(["last request", `${d.last_request} (${d.last_request_ms} ms)`]);
      }
      if (pat) rows.push(["pattern", `<i class="pat-dot" style="background:${patternColor(pat)}"></i>${esc(pat)}`]);
      const head = `<div class="tt-head"><i class="sw" style="background:${COLORS[st]}">${LETTERS[st]}</i> ${NAMES[st]}</div>`;
      return head + "<table>" + rows.map(([k, v]) => `<tr><th>${k}</th><td>${k === "pattern" ? v : esc(v)}</td></tr>`).join("") + "</table>";
    }

    function showTooltip(p, t, cx, cy, refetch) {
      const key = `${p}/${t}`;
      tooltip.innerHTML = detailHTML(p, t, detailCache.get(key));
      tooltip.hidden = false;
      const r = wrap.getBoundingClientRect();
      let x = cx - r.left + 14, y = cy - r.top + 14;
      if (x + 300 > r.width) x = cx - r.left - 310;
      tooltip.style.left = x + "px";
      tooltip.style.top = y + "px";
      if (refetch) {
        clearTimeout(fetchTimer);
        fetchTimer = setTimeout(() => fetchDetail(p, t, () => {
          if (hover && hover[0] === p && hover[1] === t) tooltip.innerHTML = detailHTML(p, t, detailCache.get(key));
        }), 90);
      }
    }

    canvas.addEventListener("mousemove", (ev) => {
      const c = cellAt(ev);
      if (!c) { hover = null; tooltip.hidden = true; return; }
      const changed = !hover || hover[0] !== c[0] || hover[1] !== c[1];
      hover = [c[0], c[1], ev.clientX, ev.clientY];
      showTooltip(c[0], c[1], ev.clientX, ev.clientY, changed);
    });
    canvas.addEventListener("mouseleave", () => { hover = null; tooltip.hidden = true; });

    // -- the keyboard: Tab reaches the grid, arrows move a cell at a time (Home/End: a row's ends),
    // the same detail as hovering is shown beside the cell, Enter or Space pins it, Escape hides it
    canvas.tabIndex = 0;
    canvas.setAttribute("role", "application");
    canvas.setAttribute("aria-roledescription", "scoreboard grid");
    canvas.setAttribute("aria-describedby", tooltip.id || "");
    function showKb(refetch) {
      if (!kb || !geo || !frame) return;
      const [x, y] = cellXY(geo, kb[0], kb[1]);
      const r = canvas.getBoundingClientRect();
      const cx = r.left + x + geo.cell / 2, cy = r.top + y + geo.cell / 2;
      const changed = refetch || !hover || hover[0] !== kb[0] || hover[1] !== kb[1];
      hover = [kb[0], kb[1], cx, cy];
      showTooltip(kb[0], kb[1], cx, cy, changed);
      tooltip.setAttribute("aria-live", "polite");
      full = true; schedule();
    }
    canvas.addEventListener("focus", () => { if (!kb) kb = [0, 0]; showKb(true); });
    canvas.addEventListener("blur", () => { hover = null; tooltip.hidden = true; tooltip.removeAttribute("aria-live"); full = true; schedule(); });
    canvas.addEventListener("keydown", (ev) => {
      if (!geo || !frame || !kb) return;
      let [p, t] = kb;
      const single = geo.single;
      switch (ev.key) {
        case "ArrowRight": if (single) p++; else t++; break;
        case "ArrowLeft": if (single) p--; else t--; break;
        case "ArrowDown": p += single ? geo.perLine : 1; break;
        case "ArrowUp": p -= single ? geo.perLine : 1; break;
        case "Home": if (single) p -= p % geo.perLine; else t = 0; break;
        case "End": if (single) p = Math.min(frame.rows - 1, p - (p % geo.perLine) + geo.perLine - 1); else t = frame.cols - 1; break;
        case "Enter": case " ":
          if (panel) { pinned = pinned && pinned[0] === p && pinned[1] === t ? null : [p, t]; full = true; schedule(); refreshPinned(); }
          ev.preventDefault(); return;
        case "Escape": hover = null; tooltip.hidden = true; return;
        default: return;
      }
      ev.preventDefault();
      p = Math.max(0, Math.min(frame.rows - 1, p));
      t = Math.max(0, Math.min(frame.cols - 1, t));
      kb = [p, t];
      showKb(false);
    });
    view.keyboardCell = () => (kb && document.activeElement === canvas ? kb.slice() : null);

    function refreshPinned() {
      if (!panel) return;
      if (!pinned || !frame) {
        panel.classList.add("muted");
        panel.innerHTML = panel.dataset.idle || "Hover a cell for its slot; click to pin it here.";
        return;
      }
      const [p, t] = pinned;
      fetchDetail(p, t, (d) => {
        if (pinned && pinned[0] === p && pinned[1] === t) {
          panel.classList.remove("muted");
          panel.innerHTML = `<div class="pin-title">pinned slot <button type="button" class="link small" data-unpin="1">unpin</button></div>` + detailHTML(p, t, d);
        }
      });
    }
    if (panel) {
      canvas.addEventListener("click", (ev) => {
        const c = cellAt(ev);
        pinned = c && !(pinned && pinned[0] === c[0] && pinned[1] === c[1]) ? c : null;
        full = true; schedule();
        refreshPinned();
      });
      panel.addEventListener("click", (ev) => { if (ev.target.dataset.unpin) { pinned = null; full = true; schedule(); refreshPinned(); } });
      setInterval(() => { if (pinned) refreshPinned(); }, 500);
    }

    view.setFrame = (f) => {
      if (prev && (f.rows !== prev.rows || f.cols !== prev.cols)) full = true;
      frame = f;
      schedule();
    };
    view.setMode = (m) => { view.mode = m; full = true; schedule(); };
    view.cellState = (p, t) => {
      if (!frame || p >= frame.rows || t >= frame.cols) return null;
      return LETTERS[frame.status[p * frame.cols + t]] || "?";
    };
    view.counts = () => (frame ? Object.assign({}, frame.counts) : {});
    window.addEventListener("resize", () => { full = true; schedule(); });
    return view;
  }

  // one websocket, opened again after a growing pause (250 ms to 5 s) whenever it closes;
  // binary messages arrive as ArrayBuffer; onUp(true|false) on open and close
  function socket(path, onmessage, onUp) {
    let backoff = 250;
    (function connect() {
      const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`);
      ws.binaryType = "arraybuffer";
      ws.onopen = () => { backoff = 250; onUp(true); };
      ws.onclose = () => { onUp(false); setTimeout(connect, backoff); backoff = Math.min(5000, backoff * 2); };
      ws.onmessage = onmessage;
    })();
  }

  window.mpmGrid = {create: createView, decode, patternColor, socket};

  // -- the embedded core's view (absent with --no-core --attach) -------------------------------
  const canvas = document.getElementById("scoreboard");
  if (!canvas) {
    window.mpmlab = null;
    return;
  }
  const listeners = {summary: [], frame: []};
  const core = createView({
    canvas, wrap: document.getElementById("grid-wrap"), tooltip: document.getElementById("tooltip"),
    caption: document.getElementById("grid-caption"), legend: document.getElementById("legend"),
    panel: document.getElementById("slot-panel"),
  }, {
    patterns: () => mpmlab.patterns,
    detailURL: (p, t) => `/api/slots/${p}/${t}`,
  });

  const mpmlab = window.mpmlab = {
    lastFrameAt: 0, lastFrameWall: 0, lastFrameSeq: 0, frames: 0, serverTime: 0, connected: false,
    patterns: [], summary: null,
    on(kind, cb) { listeners[kind].push(cb); },
    cellState: core.cellState,
    counts: core.counts,
    keyboardCell: core.keyboardCell,
    setMode(m) { core.setMode(m); updatePatternLegend(); },
  };
  Object.defineProperty(mpmlab, "layout", {get: () => core.layout});
  Object.defineProperty(mpmlab, "mode", {get: () => core.mode});

  // -- pattern legend ------------------------------------------------------------------------
  function updatePatternLegend() {
    const el = document.getElementById("pattern-legend");
    const legend = document.getElementById("legend");
    const on = mpmlab.mode === "pattern";
    el.hidden = !on; legend.hidden = on;
    if (!on) return;
    const frame = core.frame;
    const counts = new Map();
    if (frame) for (let i = 0; i < frame.pat.length; i++) {
      const st = frame.status[i];
      if (st > 2) { const k = frame.pat[i] ? mpmlab.patterns[frame.pat[i] - 1] : ""; counts.set(k, (counts.get(k) || 0) + 1); }
    }
    const items = [...counts.entries()].sort((a, b) => b[1] - a[1]);
    el.innerHTML = (items.length ? items.map(([k, n]) =>
      `<span class="chip"><i class="sw" style="background:${patternColor(k)}"></i>${k ? esc(k) : "no pattern yet (request not read)"} <b class="cnt">${n}</b></span>`).join("")
      : `<span class="muted small">no busy slot</span>`) + `<span class="chip"><i class="sw" style="background:#1f2630"></i>idle</span>`;
  }

  // -- the socket ----------------------------------------------------------------------------
  socket("/ws/scoreboard", (ev) => {
    if (typeof ev.data === "string") {
      const m = JSON.parse(ev.data);
      if (m.patterns) mpmlab.patterns = m.patterns;
      if (m.type === "summary") {
        mpmlab.summary = m;
        for (const cb of listeners.summary) cb(m);
        if (mpmlab.mode === "pattern") updatePatternLegend();
      }
      return;
    }
    const f = decode(ev.data);
    if (!f) return;
    mpmlab.lastFrameAt = performance.now();
    mpmlab.lastFrameWall = Date.now();
    mpmlab.lastFrameSeq = f.seq;
    mpmlab.serverTime = f.t;
    mpmlab.frames++;
    core.setFrame(f);
    for (const cb of listeners.frame) cb(f);
  }, (up) => { mpmlab.connected = up; document.body.classList.toggle("ws-up", up); });
})();
