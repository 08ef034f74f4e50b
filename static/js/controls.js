// Controls that answer and show it: a bar at the top of the page (and a spinner on the clicked
// button) for any request still unanswered after 300 ms, every answer's time in
// window.mpmlabTimings (the browser tests and bench/ read it), and the "live-guard" htmx extension
// on the /ws/live socket: a live fragment for an element the page no longer has (a traffic card
// removed by "stop all" a moment before its last figures arrived) is dropped, not swapped into
// nothing (htmx:oobErrorNoTarget).
(function () {
  "use strict";
  htmx.defineExtension("live-guard", {
    transformResponse(text) {
      if (text.indexOf("hx-swap-oob") < 0) return text;
      const tpl = document.createElement("template");
      tpl.innerHTML = text;
      let dropped = 0;
      for (const el of [...tpl.content.children]) {
        const oob = el.getAttribute("hx-swap-oob");
        if (oob == null) continue;
        const i = oob.indexOf(":");
        const sel = i >= 0 ? oob.slice(i + 1) : (el.id ? "#" + CSS.escape(el.id) : null);
        if (sel && !document.querySelector(sel)) { el.remove(); dropped++; }
      }
      if (dropped) window.mpmlabDroppedFragments = (window.mpmlabDroppedFragments || 0) + dropped;
      return dropped ? tpl.innerHTML : text;
    },
  });

  const timings = window.mpmlabTimings = [];
  const started = new Map();
  let pending = 0;
  const bar = document.createElement("div");
  bar.id = "busy-bar";
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-label", "waiting for the server");
  document.body.appendChild(bar);
  function show() { document.body.classList.toggle("busy", pending > 0); }
  document.body.addEventListener("htmx:beforeRequest", (e) => {
    started.set(e.detail.xhr, {t: performance.now(), what: e.detail.requestConfig ? e.detail.requestConfig.path : "?"});
    pending++;
    show();
  });
  document.body.addEventListener("htmx:afterRequest", (e) => {
    const s = started.get(e.detail.xhr);
    if (s) {
      started.delete(e.detail.xhr);
      timings.push({path: s.what, ms: Math.round(performance.now() - s.t), status: e.detail.xhr.status});
      if (timings.length > 200) timings.shift();
    }
    pending = Math.max(0, pending - 1);
    show();
  });
})();
