// Page glue that htmx should not do: tabs, the color-mode switch, the log's follow mode, the
// connection indicator, and the MPM buttons following the server (also after a CLI switch).
(function () {
  "use strict";
  const $ = (s, r = document) => r.querySelector(s);
  const $$ = (s, r = document) => [...r.querySelectorAll(s)];

  for (const tab of $$(".tab")) {
    tab.addEventListener("click", () => {
      for (const t of $$(".tab")) t.classList.toggle("on", t === tab);
      for (const p of $$(".tabpane")) p.hidden = p.id !== "tab-" + tab.dataset.tab;
    });
  }

  for (const b of $$(".seg [data-mode]")) {
    b.addEventListener("click", () => {
      for (const o of $$(".seg [data-mode]")) o.classList.toggle("on", o === b);
      window.mpmlab.setMode(b.dataset.mode);
    });
  }

  // error log: keep the last lines, follow the end unless the user scrolled up
  const log = $("#log");
  const MAX_LINES = 500;
  function trimLog() {
    if (!log) return; // no embedded core: no error log
    const lines = $("#log-lines");
    while (lines.children.length > MAX_LINES) lines.removeChild(lines.firstChild);
    if ($("#log-follow").checked) log.scrollTop = log.scrollHeight;
  }
  trimLog();
  document.body.addEventListener("htmx:wsAfterMessage", trimLog);

  // connection indicator: both sockets
  const state = $("#conn-state");
  function showConn() {
    const up = document.body.classList.contains("ws-up");
    state.textContent = up ? "live" : "reconnecting…";
    state.classList.toggle("up", up);
  }
  new MutationObserver(showConn).observe(document.body, {attributes: true, attributeFilter: ["class"]});
  showConn();

  // the MPM buttons follow the running MPM
  if (window.mpmlab) {
    let last = null;
    window.mpmlab.on("summary", (m) => {
      if (m.mpm === last) return;
      last = m.mpm;
      for (const b of $$("#mpm-switch button")) {
        b.classList.toggle("on", b.value === m.mpm);
        b.setAttribute("aria-pressed", b.value === m.mpm ? "true" : "false");
      }
      document.title = `mpmlab · ${m.mpm}`;
    });
  }

  // traffic cards: a dot in the pattern's color (same colors as the grid's pattern mode)
  function paintDots(root) {
    for (const d of $$(".pat-dot[data-label]", root)) d.style.background = window.mpmGrid.patternColor(d.dataset.label);
  }
  paintDots(document);
  document.body.addEventListener("htmx:afterSettle", (e) => paintDots(e.target));
  // also the ws extension's swaps (/ws/live): htmx's oobSwap fires this on what it swapped in
  document.body.addEventListener("htmx:oobAfterSwap", (e) => paintDots(e.target));

  // the new-pattern select drives the form it replaces
  document.body.addEventListener("htmx:configRequest", (e) => {
    if (e.detail.elt && e.detail.elt.id === "pattern-select") e.detail.parameters.pattern = e.detail.elt.value;
  });
})();
