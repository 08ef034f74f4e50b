// First-visit introduction and the guided tour. The introduction opens once (localStorage
// "mpmlab.intro"); the header's "Tour" link opens the tour again at any time. Each step points at a
// part of the page, says what to watch, and may offer to do its step (click the control for you).
(function () {
  "use strict";
  const KEY = "mpmlab.intro";
  const $ = (s) => document.querySelector(s);
  const click = (sel) => { const el = $(sel); if (el) el.click(); };
  const showTab = (name) => click(`.tab[data-tab=${name}]`);

  const STEPS = [
    {target: "#preset-browsers", title: "1. Start Browsers",
      text: "Browsers open 6 keep-alive connections each, as a web browser does, and then sit idle between pages: 420 connections doing almost nothing.",
      action: "Start Browsers", run: () => { showTab("traffic"); click("#preset-browsers"); }},
    {target: "#scoreboard", title: "2. Watch K under worker",
      text: "Under worker (and prefork) every idle keep-alive connection holds a whole thread in K (Keepalive) until KeepAliveTimeout: the grid fills with K while hardly a request is served.",
      action: "Switch to worker", run: () => { if (!$("#switch-worker.on")) click("#switch-worker"); }},
    {target: "#mpm-switch", title: "3. Switch to event",
      text: "The switch is a graceful restart: old children finish what they hold (their rows stay until then), new children start under event.",
      action: "Switch to event", run: () => click("#switch-event")},
    {target: "#totals", title: "4. Watch them park",
      text: "Under event the same connections leave the grid: a listener thread parks them (the parked keep-alive tile) and the threads are free (_) for requests that really arrive.",
    },
    {target: "#preset-slowloris", title: "5. Slowloris",
      text: "Slowloris sends a request's head a byte at a time. Every MPM gives each such connection a worker reading it (R): event cannot park a request that is not read yet. RequestReadTimeout (Directives tab) is Apache's defence.",
      action: "Start Slowloris", run: () => { showTab("traffic"); click("#preset-slowloris"); }},
    {target: "#ch-memory", title: "6. The memory of prefork",
      text: "prefork serves each connection with a whole process: switch to prefork with this traffic and watch the children and their memory (PSS) grow towards MaxRequestWorkers.",
      action: "Switch to prefork", run: () => click("#switch-prefork")},
    {target: "#traffic-running", title: "That is the tour",
      text: "Stop the traffic when you are done. Each directive in the Directives tab has a ? with what it does and what raising it costs. The Tour link in the header opens this again.",
      action: "Stop all traffic", run: () => { showTab("traffic"); const b = [...document.querySelectorAll("#tab-traffic h3 button")].find((x) => /stop all/.test(x.textContent)); if (b) b.click(); }},
  ];

  let step = -1, bubble = null, lit = null;

  function unlight() { if (lit) lit.classList.remove("tour-target"); lit = null; }

  function end() {
    unlight();
    if (bubble) bubble.hidden = true;
    step = -1;
    window.mpmlabTour.step = -1;
    try { localStorage.setItem(KEY, "seen"); } catch (e) { /* private mode: it opens again next time */ }
  }

  function place(el) {
    const r = el.getBoundingClientRect();
    const w = Math.min(360, window.innerWidth - 24);
    let left = Math.min(Math.max(12, r.left), window.innerWidth - w - 12);
    let top = r.bottom + 10;
    const h = bubble.offsetHeight || 180;
    if (top + h > window.innerHeight - 8) top = Math.max(8, r.top - h - 10);
    if (top + h > window.innerHeight - 8) top = Math.max(8, window.innerHeight - h - 8);
    bubble.style.width = w + "px";
    bubble.style.left = left + "px";
    bubble.style.top = top + "px";
  }

  function show(i) {
    step = i;
    window.mpmlabTour.step = i;
    const s = STEPS[i];
    if (!bubble) {
      bubble = document.createElement("div");
      bubble.id = "tour";
      bubble.className = "tour";
      bubble.setAttribute("role", "dialog");
      bubble.setAttribute("aria-live", "polite");
      document.body.appendChild(bubble);
      bubble.addEventListener("click", (e) => {
        const b = e.target.closest("button");
        if (!b) return;
        if (b.dataset.tour === "next") { if (step + 1 < STEPS.length) show(step + 1); else end(); }
        else if (b.dataset.tour === "back") { if (step > 0) show(step - 1); }
        else if (b.dataset.tour === "close") end();
        else if (b.dataset.tour === "do") { STEPS[step].run(); b.disabled = true; b.textContent = "done \u2713"; }
      });
      window.addEventListener("resize", () => { if (step >= 0 && lit) place(lit); });
    }
    const last = i === STEPS.length - 1;
    bubble.innerHTML = `<div class="tour-head"><b>${s.title}</b><span class="muted small">${i + 1} / ${STEPS.length}</span>
        <button type="button" class="x" data-tour="close" aria-label="close the tour">\u00d7</button></div>
      <p>${s.text}</p>
      <div class="actions">${s.action ? `<button type="button" class="btn primary small" data-tour="do">${s.action}</button>` : ""}
        <span class="spacer"></span>
        ${i > 0 ? '<button type="button" class="btn small ghost" data-tour="back">Back</button>' : ""}
        <button type="button" class="btn small" data-tour="next" id="tour-next">${last ? "Finish" : "Next"}</button></div>`;
    bubble.hidden = false;
    unlight();
    const el = $(s.target) || document.body;
    lit = el;
    el.classList.add("tour-target");
    el.scrollIntoView({block: "center", inline: "nearest"});
    requestAnimationFrame(() => place(el));
    const next = bubble.querySelector("#tour-next");
    if (next) next.focus({preventScroll: true});
  }

  function intro(focus) {
    const box = $("#intro");
    if (!box) return;
    box.hidden = false;
    if (!focus) return; // on a first visit the page keeps its own focus
    box.scrollIntoView({block: "nearest"});
    const first = box.querySelector("button");
    if (first) first.focus({preventScroll: true});
  }
  function closeIntro() { const box = $("#intro"); if (box) box.hidden = true; try { localStorage.setItem(KEY, "seen"); } catch (e) { /* */ } }

  document.body.addEventListener("click", (e) => {
    const b = e.target.closest && e.target.closest("[data-guide]");
    if (!b) return;
    const what = b.dataset.guide;
    if (what === "tour") { closeIntro(); show(0); }
    else if (what === "close-intro") closeIntro();
    else if (what === "intro") intro(true);
  });
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape") return;
    if (step >= 0) end();
    const box = $("#intro");
    if (box && !box.hidden) closeIntro();
  });

  window.mpmlabTour = {step: -1, steps: STEPS.length, start: () => show(0), end};
  let seen = null;
  try { seen = localStorage.getItem(KEY); } catch (e) { seen = "seen"; }
  if (seen !== "seen") intro(false);
})();
