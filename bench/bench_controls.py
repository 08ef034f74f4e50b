"""How fast the page's controls answer, and the grid's frame rate, under the heaviest loads a person
makes with the presets: prefork with Browsers (up to 256 children), and event with 4096 slots.

    ./dev.sh bench controls [--only prefork|event] [--window 5]

For each case: `mpmlab dashboard` in its own process (a control token of its own), one page in
headless Chromium (/usr/bin/chromium); the Browsers preset is started from the page and the load
built up (prefork: until 200 children are busy or 90 s passed); then
- the grid's frame rate in the page (frames received and drawn, over --window seconds),
- each control clicked in the page, timed in the page from the click to htmx's answer
  (htmx:afterRequest; what a person waits for, the page's own main-thread delays included):
  a second preset (AJAX polling), "stop all", and (prefork) the switch to event.
Targets (issue 11): every answer within 300 ms, or progress shown (the page's busy bar after
300 ms); the grid at >= 10 frames/s. The sampler's own rate (ticks/s, from /api/dashboard) and
the frames it offered are printed beside the page's: a frame is only sent when the grid changed
(else once a second), so the page's frame rate is at most the rate at which the grid changes. Figures, never asserted, go to docs/dashboard.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from common import ARGS, CHROMIUM, SLOTS_SETTINGS, TOKEN, api, start_dashboard, wait_until

from mpmcore.procs import terminate

CASES = {
    "prefork": ("prefork", {}),  # Apache's defaults: ServerLimit = MaxRequestWorkers = 256
    "event": ("event", SLOTS_SETTINGS),  # 64 children x 64 threads = 4096 slots
}

CLICK = """(sel) => new Promise((ok) => {
    const t0 = performance.now();
    const h = (e) => { document.body.removeEventListener('htmx:afterRequest', h);
        ok({ms: performance.now() - t0, status: e.detail.xhr.status, text: e.detail.xhr.responseText.slice(0, 300)}); };
    document.body.addEventListener('htmx:afterRequest', h);
    document.querySelector(sel).click(); })"""
FPS = """(ms) => new Promise((done) => { const f0 = window.mpmlab.frames, t0 = performance.now();
    let drawn = 0; const tick = () => { drawn++; if (performance.now() - t0 < ms) requestAnimationFrame(tick); };
    requestAnimationFrame(tick);
    setTimeout(() => done({frames: 1000 * (window.mpmlab.frames - f0) / (performance.now() - t0),
                           raf: 1000 * drawn / (performance.now() - t0)}), ms); })"""


def grid_rates(pg: Any, base: str, window: float, under: str) -> None:
    """The sampler's ticks and offered frames (from /api/dashboard) beside the frames the page
    received and drew, and its animation frames, over ``window`` seconds."""
    d0, w0 = api(base, "/api/dashboard"), time.monotonic()
    s0 = d0["sampler"]
    fps = pg.evaluate(FPS, int(window * 1000))
    s1, w1 = api(base, "/api/dashboard")["sampler"], time.monotonic()
    ticks = (s1["ticks"] - s0["ticks"]) / (w1 - w0)
    offered = (s1["grid_frames_offered"] - s0["grid_frames_offered"]) / (w1 - w0)
    print(f"grid under {under}: the sampler ticked {ticks:.1f}/s (of {d0['grid_hz']:.0f}) and offered {offered:.1f} "
          f"frames/s (a frame goes out when the grid changed, else once a second); the page received and drew "
          f"{fps['frames']:.1f}/s; its animation frames {fps['raf']:.1f}/s (main thread free that often)")


def run(case: str, window: float) -> None:
    from playwright.sync_api import sync_playwright

    mpm, settings = CASES[case]
    print(f"== {case}")
    dash, base, _ = start_dashboard(["--mpm", mpm], settings)
    try:
        if case == "event":
            wait_until(lambda: api(base, "/api/scoreboard")["state_counts"]["_"] >= 4000, 180, "4096 ready slots")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            pg = browser.new_page(viewport={"width": 1600, "height": 1200})
            errors: list[str] = []
            pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            pg.add_init_script("localStorage.setItem('mpmlab.intro', 'seen')")
            pg.goto(f"{base}/?token={TOKEN}")
            pg.wait_for_function("window.mpmlab && window.mpmlab.frames > 0", timeout=30_000)
            answers = {"preset Browsers": pg.evaluate(CLICK, "#preset-browsers")}
            t0 = time.monotonic()

            def loaded():
                if case == "event":  # event parks idle keep-alive connections: they leave the grid
                    return (api(base, "/api/status")["summary"].get("conns_async_keep_alive") or 0) >= 400 \
                        or time.monotonic() - t0 > 90
                c = api(base, "/api/scoreboard")["state_counts"]
                return sum(c.get(k, 0) for k in "RWKCLDG") >= 200 or time.monotonic() - t0 > 90
            wait_until(loaded, 120, "the load built up", interval=0.5)
            st = api(base, "/api/status")
            tiles = {t["label"]: t["value"] for t in st["tiles"]}
            print(f"load: processes {tiles.get('processes')}, busy {tiles.get('busy')}, memory {tiles.get('memory')}, "
                  f"after {time.monotonic() - t0:.0f} s")
            grid_rates(pg, base, window, "Browsers")
            answers["preset AJAX polling"] = pg.evaluate(CLICK, "#preset-ajax")
            # AJAX polling's clients connected and polling (each made a request): the grid changes more now
            wait_until(lambda: any(x["pattern"] == "ajax" and x["state"] == "running"
                                   and (x.get("total") or {}).get("responses", 0) >= x["active_connections"] > 0
                                   for x in api(base, "/api/traffic")["patterns"]), 30, "AJAX polling's clients",
                       interval=0.2)
            grid_rates(pg, base, window, "Browsers + AJAX polling")
            answers["stop all"] = pg.evaluate(CLICK, "#tab-traffic h3 button")
            if case == "prefork":
                answers["switch to event"] = pg.evaluate(CLICK, "#switch-event")
            for what, a in answers.items():
                words = "stopping" if "stopping" in a["text"] else ""
                print(f"  {what:<22} answered in {a['ms']:7.0f} ms (HTTP {a['status']}) {words}")
            drained = time.monotonic()
            wait_until(lambda: not [x for x in api(base, "/api/traffic")["patterns"] if x["state"] == "running"],
                       60, "every pattern stopped", interval=0.2)
            print(f"  patterns finished {time.monotonic() - drained:.1f} s after the stop's answer")
            print(f"  console errors: {len(errors)} {errors[:3]}")
            browser.close()
    finally:
        terminate(dash, 40)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=list(CASES))
    ap.add_argument("--window", type=float, default=5.0, help="seconds of frame counting")
    args = ap.parse_args()
    for case in [args.only] if args.only else list(CASES):
        run(case, args.window)
    return 0


if __name__ == "__main__":
    sys.exit(main())
