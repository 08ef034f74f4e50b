"""Fixtures for the dashboard tests: the real app with its real embedded core, in-process
(TestClient, lifespan included) or as the `mpmlab dashboard` command in its own process.
Everything started here is stopped by its pid, and the tests check that nothing is left.

Control needs a token (docs/security.md). A DashboardProcess reads the URL the dashboard prints at
start (``?token=...``), sends the token with every ``api()`` call, and every page of a browser from
``launch_chromium`` opens that URL first (as a user does), which sets the dashboard's cookie.
``in_process_settings`` makes settings with control open (``no_token``): the TestClient tests build
their own client and test everything but the token; tests/integration/test_token.py tests the token.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import ROOT, free_port, need, pid_alive, wait_for

from mpmcore import scoreboard as sb
from mpmcore.procs import terminate

BASE = "http://127.0.0.1:8000"  # TestClient's base URL (the Origin its pages are served from)
WS = "ws://127.0.0.1:8000"  # TestClient's base for websockets
# Chromium as the tests run it: Debian's, headless, root-safe, no calls to the outside world.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


#: The URL line `mpmlab dashboard` prints at start (mpmlab.main.run_dashboard).
START_LINE = re.compile(r"^mpmlab dashboard: (http://\S+)", re.MULTILINE)
#: The dashboards running now (DashboardProcess), whose printed URL each new browser page opens.
RUNNING: list[DashboardProcess] = []


class TokenBrowser:
    """A Playwright Browser whose ``new_page()`` first opens the printed URL of every dashboard that
    runs (its ``?token=`` redirect sets the cookie in the page's context), as a user who followed
    the link; everything else is the Browser's own."""

    def __init__(self, browser):
        self._browser = browser

    def new_page(self, **kw):
        pg = self._browser.new_page(**kw)
        for d in list(RUNNING):
            d.sign_in(pg)
        return pg

    def __getattr__(self, name: str):
        return getattr(self._browser, name)


def launch_chromium(playwright):
    """Debian's Chromium through Playwright (never a downloaded browser); fails if it is missing.
    Its pages carry the token of every running DashboardProcess (TokenBrowser)."""
    return TokenBrowser(playwright.chromium.launch(executable_path=need("chromium"), headless=True,
                                                   args=CHROMIUM_ARGS))


@contextlib.contextmanager
def ws_session(client, path: str, **kw):
    """A TestClient websocket. Its teardown sends the close and cancels the app's task right away;
    when our handler is still unwinding at that instant, TestClient reports the cancellation as
    CancelledError. That race is TestClient's (under uvicorn the handler ends on the close frame,
    which the browser tests exercise), so it is ignored here and only here."""
    cm = client.websocket_connect(WS + path, **kw)
    ws = cm.__enter__()
    try:
        yield ws
    except BaseException:
        cm.__exit__(*sys.exc_info())
        raise
    try:
        cm.__exit__(None, None, None)
    except concurrent.futures.CancelledError:
        pass


def shm_path(listen: str) -> Path:
    return Path("/dev/shm" + sb.segment_name(listen))


class DashboardProcess:
    """`python -m mpmcore.cli dashboard ...` in its own process, stopped by its pid."""

    def __init__(self, tmp: Path, mpm: str = "event", settings: dict[str, Any] | None = None,
                 extra_args: list[str] | None = None, start_timeout: float = 40.0):
        self.mpm = mpm
        self.port = free_port()
        self.core_port = free_port()
        self.core_listen = f"127.0.0.1:{self.core_port}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"dashboard-{self.port}.log"
        args = [sys.executable, "-m", "mpmcore.cli", "dashboard", "--port", str(self.port),
                "--core-listen", self.core_listen, "--mpm", mpm]
        for k, v in (settings or {}).items():
            args += ["--set", f"{k}={v}"]
        args += extra_args or []
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=subprocess.STDOUT, cwd=str(ROOT))
        self.core_pid: int | None = None
        self.runner_pid: int | None = None
        #: The URL the dashboard printed (with ?token= unless --no-token) and its token (None: open).
        self.start_url: str | None = None
        self.token: str | None = None
        try:
            info = wait_for(self._ready, timeout=start_timeout, interval=0.1, what="the dashboard")
        except AssertionError:
            self.stop()
            raise AssertionError(f"dashboard did not start: {self.log_path.read_text()[-3000:]}") from None
        self.core_pid, self.runner_pid = info["core_pid"], info["traffic_runner_pid"]
        self.master_pid = self.api("/api/status")["core"]["pid"]
        RUNNING.append(self)

    def _read_start_url(self) -> bool:
        """The printed URL, once it is in the log (printed before uvicorn listens)."""
        m = START_LINE.search(self.log_path.read_text(errors="replace"))
        if not m:
            return False
        from urllib.parse import parse_qs, urlsplit
        self.start_url = m.group(1)
        self.token = parse_qs(urlsplit(self.start_url).query).get("token", [None])[0]
        return True

    def _ready(self) -> dict | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"dashboard exited with {self.proc.returncode}: {self.log_path.read_text()[-3000:]}")
        if self.start_url is None and not self._read_start_url():
            return None
        try:
            info = self.api("/api/dashboard")
            self.api("/api/status")
            return info
        except (OSError, ValueError):
            return None

    @property
    def token_headers(self) -> dict[str, str]:
        return {"X-Mpmlab-Token": self.token} if self.token else {}

    def sign_in(self, pg) -> None:
        """Open the printed URL in the context of the Playwright page ``pg``: the dashboard answers
        with its cookie and a redirect to the URL without ?token=."""
        if self.start_url is None or self.token is None:
            return
        r = pg.request.get(self.start_url, max_redirects=0)
        assert r.status == 303 and "token=" not in r.headers["location"], (r.status, r.headers)

    def api(self, path: str, method: str = "GET", body: Any = None, headers: dict | None = None) -> Any:
        import urllib.error
        import urllib.request
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **self.token_headers,
                                              **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise ValueError(f"{e.code}: {e.read()[:500]!r}") from None

    def reset(self, timeout: float = 60.0) -> None:
        """Back to where the dashboard started: no traffic, the first MPM, no request in flight, so
        that one failed test does not leave its traffic or MPM to the next one."""
        self.api("/api/traffic/stop-all", method="POST", body={})
        wait_for(lambda: not [p for p in self.api("/api/traffic")["patterns"] if p["state"] == "running"],
                 timeout=timeout, interval=0.2, what="every traffic pattern stopped")
        if self.api("/api/mpm")["mpm"] != self.mpm:
            self.api("/api/mpm", method="POST", body={"mpm": self.mpm})

        def settled() -> dict | None:
            sb_ = self.api("/api/scoreboard")
            c = sb_["state_counts"]
            return sb_ if sb_["mpm"] == self.mpm and not (c.get("R", 0) or c.get("W", 0) or c.get("G", 0)) else None
        wait_for(settled, timeout=timeout, interval=0.2, what=f"{self.mpm}, with no request in flight")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self in RUNNING:
            RUNNING.remove(self)
        terminate(self.proc, timeout, sig)
        self.logf.close()
        return self.proc.returncode

    def assert_clean(self, timeout: float = 20.0) -> None:
        """No process we started is left, and the core's scoreboard is gone (on failure, both are
        cleaned up before the error is raised)."""
        pids = [p for p in (self.core_pid, self.runner_pid, getattr(self, "master_pid", None)) if p]
        assert_core_gone(self.core_listen, pids, timeout)


def in_process_settings(**kw: Any):
    """Settings for an in-process app on a free core port. Control is open (``no_token``) unless
    ``token=`` is given: see the module's docstring."""
    from mpmlab.settings import DashboardSettings
    kw.setdefault("no_token", "token" not in kw)
    return DashboardSettings(core_listen=f"127.0.0.1:{free_port()}", port=8000, **kw)


def assert_core_gone(listen: str, pids: list[int], timeout: float = 20.0) -> None:
    """``pids`` (processes the test started) have exited and the scoreboard of the core on ``listen``
    is gone. On failure, the survivors among ``pids`` are SIGKILLed and the segment unlinked, then
    the error is raised: a failed check leaves nothing behind for the next test."""
    try:
        wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=timeout, interval=0.1,
                 what=f"processes {pids} to exit")
        wait_for(lambda: not shm_path(listen).exists(), timeout=timeout, interval=0.1,
                 what=f"{shm_path(listen)} to be removed")
    except AssertionError as e:
        survivors = [p for p in pids if pid_alive(p)]
        for p in survivors:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        note = f"cleaned up: SIGKILLed {survivors}"
        try:
            wait_for(lambda: not any(pid_alive(p) for p in survivors), timeout=5, interval=0.05)
        except AssertionError:
            note += f", still alive: {[p for p in survivors if pid_alive(p)]}"
        if shm_path(listen).exists():
            shm_path(listen).unlink(missing_ok=True)
            note += f"; unlinked {shm_path(listen)}"
        raise AssertionError(f"{e} ({note})") from None


__all__ = [
    "BASE",
    "RUNNING",
    "WS",
    "DashboardProcess",
    "TokenBrowser",
    "assert_core_gone",
    "hover_cell",
    "in_process_settings",
    "launch_chromium",
    "shm_path",
    "ws_session",
]


def hover_cell(pg, view: str, canvas, tip, letter: str, want: str, timeout: float = 15.0) -> str:
    """Move the mouse over a cell in state ``letter`` of the grid ``view`` (a JS expression:
    ``window.mpmlab`` or ``window.mpmSources.NAME``) drawn on ``canvas``, and return the text of the
    tooltip ``tip`` once it shows ``want``. The cell and its place are looked up again on each try:
    slots change state and the page may reflow under the mouse, as for a user."""
    from playwright import sync_api
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        cell = pg.evaluate(f"""(l) => {{ const v = {view}, g = v.layout;
            for (let p = 0; p < g.rows; p++) for (let t = 0; t < g.cols; t++)
              if (v.cellState(p, t) === l) return [p, t]; return null; }}""", letter)
        if not cell:  # none in that state at this instant: tried again, as for the tooltip
            last = "(no such cell)"
            pg.wait_for_timeout(100)
            continue
        box = canvas.bounding_box()
        lay = pg.evaluate(f"{view}.layout")
        pg.mouse.move(box["x"] + lay["label"] + cell[1] * lay["cell"] + lay["cell"] / 2,
                      box["y"] + cell[0] * lay["cell"] + lay["cell"] / 2)
        try:
            sync_api.expect(tip).to_contain_text(want, timeout=2_000)
            return tip.inner_text()
        except AssertionError:
            last = tip.inner_text() if tip.is_visible() else "(hidden)"
    raise AssertionError(f"the tooltip of a {letter} cell in {view} never showed {want!r}; last: {last!r}")

