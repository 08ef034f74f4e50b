"""The embedded mpmcore master: its process (started and stopped by pid) and its control socket.

``EmbeddedCore`` owns the ``mpmlab serve`` subprocess. ``CoreControl`` speaks the master's control
protocol (one JSON request per connection on a Unix socket) without blocking the event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mpmcore import scoreboard as sb
from mpmcore.errorlog import UnsafeFile
from mpmcore.master import ctl_request, run_dir_for
from mpmcore.master.control import make_private_dir, open_private
from mpmcore.procs import terminate
from mpmlab.settings import ROOT

START_TIMEOUT = 30.0  # seconds for the master to bind, fork and answer
STOP_TIMEOUT = 15.0  # TERM, then KILL: the master itself escalates to KILL on its children after ~9 s
CTL_TIMEOUT = 30.0


class CoreError(RuntimeError):
    """The embedded server could not be started or reached."""


class ControlError(Exception):
    """The master refused a command. ``directive`` names the directive at fault, when there is one."""

    def __init__(self, message: str, directive: str | None = None):
        super().__init__(message)
        self.message = message
        self.directive = directive


class EmbeddedCore:
    """``python -m mpmlab.services.corelaunch -- serve --mpm M --listen L`` as a child process of the dashboard."""

    def __init__(self, listen: str, mpm: str, settings: dict[str, str], log_dir: Path | None = None):
        self.listen = listen
        self.mpm = mpm
        self.settings = settings
        self.run_dir = run_dir_for(listen)
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = (log_dir or self.run_dir.parent) / f"dashboard-core-{os.getpid()}.stderr"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "mpmlab.services.corelaunch", "--parent-pid", str(os.getpid()), "--",
               "serve", "--mpm", self.mpm, "--listen", self.listen]
        for k, v in self.settings.items():
            cmd += ["--set", f"{k}={v}"]
        try:
            if self.stderr_path.parent == self.run_dir.parent:
                make_private_dir(self.run_dir)  # the runtime root: created private, checked (owner, mode, no link)
            else:
                self.stderr_path.parent.mkdir(parents=True, exist_ok=True)
            # never through a planted link, whichever directory it is in
            err = os.fdopen(open_private(self.stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb")
        except (UnsafeFile, OSError) as e:
            raise CoreError(f"cannot start the embedded server: {e}") from None
        try:
            # Own session: a Ctrl-C in the terminal reaches the dashboard, which then stops the
            # core in order (traffic first). No preexec_fn: nothing runs between fork and exec.
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=str(ROOT),
                                         start_new_session=True, close_fds=True)
        finally:
            err.close()
        deadline = time.monotonic() + START_TIMEOUT
        ctl = str(self.run_dir / "ctl.sock")
        while True:
            if self.proc.poll() is not None:
                raise CoreError(f"the embedded server exited with status {self.proc.returncode}: "
                                f"{self.stderr_tail()}")
            try:
                info = json.loads((self.run_dir / "info.json").read_text())
                if info.get("pid") == self.proc.pid and ctl_request(ctl, {"cmd": "status"}, timeout=2).get("ok"):
                    return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise CoreError(f"the embedded server did not answer within {START_TIMEOUT:.0f}s: {self.stderr_tail()}")
            time.sleep(0.05)

    def stderr_tail(self, n: int = 1500) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-n:].strip()
        except OSError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """TERM the master (it stops its children and unlinks its scoreboard), KILL after the
        deadline; reap it. Only our own pid is ever signalled."""
        proc = self.proc
        if proc is None:
            return None
        if terminate(proc, timeout):
            # a KILLed master could not unlink its scoreboard: do it for it
            try:
                os.unlink("/dev/shm" + sb.segment_name(self.listen))
            except OSError:
                pass
        try:
            self.stderr_path.unlink()
        except OSError:
            pass
        return proc.returncode


class CoreControl:
    """Async access to a master's control socket, the scoreboard name and the error log path."""

    def __init__(self, listen: str):
        self.listen = listen
        self.run_dir = run_dir_for(listen)
        self.ctl_path = str(self.run_dir / "ctl.sock")
        self.shm_name = sb.segment_name(listen)
        self.error_log = str(self.run_dir / "error_log")
        self._lock = asyncio.Lock()  # one command at a time: a switch is not interleaved with another

    async def request(self, cmd: str, **fields: Any) -> dict[str, Any]:
        req = {"cmd": cmd, **{k: v for k, v in fields.items() if v is not None}}
        async with self._lock:
            try:
                answer = await asyncio.to_thread(ctl_request, self.ctl_path, req, CTL_TIMEOUT)
            except (OSError, ValueError) as e:
                raise CoreError(f"the embedded server does not answer on {self.ctl_path}: {e}") from None
        if not answer.get("ok"):
            raise ControlError(answer.get("error") or "command failed", answer.get("directive"))
        return answer

    async def status(self) -> dict[str, Any]:
        return await self.request("status")

    async def switch(self, mpm: str, settings: dict[str, str] | None = None) -> dict[str, Any]:
        return await self.request("switch", mpm=mpm, set=settings or None)

    async def graceful(self, settings: dict[str, str] | None = None) -> dict[str, Any]:
        return await self.request("graceful", set=settings or None)

    async def restart(self, settings: dict[str, str] | None = None) -> dict[str, Any]:
        return await self.request("restart", set=settings or None)

    async def check(self, mpm: str, settings: dict[str, str]) -> dict[str, Any]:
        return await self.request("check", mpm=mpm, set=settings)
