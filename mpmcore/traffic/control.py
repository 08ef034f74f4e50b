"""Control API of the traffic generator for other processes (the dashboard, the CLI).

``TrafficRunner`` owns the runner subprocess (spawned by exec, never by fork, so it is safe to use
from a process running uvicorn threads). ``TrafficClient`` is an asyncio client for its Unix
socket::

    runner = TrafficRunner()
    runner.start()                      # spawns, waits until the socket answers
    async with await TrafficClient.connect(runner.socket_path) as tc:
        pid = await tc.start("steady", target="http://127.0.0.1:8080/", clients=20)
        await tc.update(pid, clients=50)
        async for frame in tc.frames():   # one StatsFrame every 250 ms
            ...
        await tc.stop(pid)
    runner.close()                      # TERM by pid, KILL after the deadline, reaped

Errors from the runner come back as the same exception types: ValueError (bad parameters,
disallowed target, cap exceeded; message names the parameter and its range), KeyError (unknown
pattern id); anything else as TrafficError.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Callable
from typing import IO, Any

from mpmcore.procs import terminate
from mpmcore.traffic.catalogue import PATTERNS
from mpmcore.traffic.runstats import Json, RunInfo, StatsFrame
from mpmcore.traffic.target import TargetError

__all__ = ["PATTERNS", "TrafficClient", "TrafficError", "TrafficRunner"]

#: Frames kept for a slow ``frames()`` consumer; older ones are dropped first.
FRAME_QUEUE = 64


class TrafficError(RuntimeError):
    """The runner failed (not a parameter error), or the control connection was lost."""


class TrafficClient:
    """Asyncio client of a traffic runner's control socket. One instance per event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._queues: dict[int, tuple[collections.deque[StatsFrame], asyncio.Event]] = {}
        self._callbacks: list[Callable[[StatsFrame], object]] = []
        self._subscribed = False
        self._closed = False
        self._read_task = asyncio.ensure_future(self._read_loop())

    @classmethod
    async def connect(cls, socket_path: str, timeout: float = 5.0) -> TrafficClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(socket_path, limit=64 << 20), timeout)
        return cls(reader, writer)

    async def __aenter__(self) -> TrafficClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- plumbing -----------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        err: BaseException = TrafficError("control connection closed by the runner")
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                msg = json.loads(line)
                if msg.get("type") == StatsFrame.TYPE:
                    self._dispatch_frame(StatsFrame.from_json(msg))
                    continue
                fut = self._pending.pop(msg.get("id", -1), None)
                if fut is None or fut.done():
                    continue
                if msg.get("ok"):
                    fut.set_result(msg.get("result"))
                else:
                    e = msg.get("error") or {}
                    etype = {"ValueError": ValueError, "TargetError": TargetError,
                             "KeyError": KeyError}.get(str(e.get("type")), TrafficError)
                    fut.set_exception(etype(e.get("message", "unknown error")))
        except asyncio.CancelledError:
            err = TrafficError("control client closed")
            raise
        except Exception as exc:  # broken connection or bad JSON
            err = TrafficError(f"control connection failed: {exc}")
        finally:
            self._closed = True
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(err)
            self._pending.clear()
            for _q, ev in self._queues.values():
                ev.set()

    def _dispatch_frame(self, frame: StatsFrame) -> None:
        for q, ev in self._queues.values():
            q.append(frame)
            ev.set()
        for cb in list(self._callbacks):
            try:
                cb(frame)
            except Exception:  # a consumer's bug must not kill the control connection
                traceback.print_exc()

    async def _call(self, op: str, **fields: object) -> Any:
        if self._closed:
            raise TrafficError("control connection is closed")
        mid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[mid] = fut
        self._writer.write((json.dumps({"id": mid, "op": op, **fields}) + "\n").encode())
        await self._writer.drain()
        return await fut

    async def _ensure_subscribed(self) -> None:
        if not self._subscribed:
            self._subscribed = True
            await self._call("subscribe")

    # -- API ----------------------------------------------------------------------------------
    async def ping(self) -> Json:
        """{"pid": the runner's pid}"""
        result: Json = await self._call("ping")
        return result

    async def catalogue(self) -> Json:
        """The pattern catalogue (same data as catalogue_json())."""
        result: Json = await self._call("catalogue")
        return result

    async def start(self, pattern: str, **params: object) -> str:
        """Start a pattern; returns its id (e.g. "steady-1"). ValueError on bad parameters."""
        return str(await self._call("start", pattern=pattern, params=params))

    async def update(self, pattern_id: str, **params: object) -> RunInfo:
        """Change live parameters of a running pattern; returns its description (no figures)."""
        return RunInfo.from_json(await self._call("update", pattern_id=pattern_id, params=params))

    async def stop(self, pattern_id: str) -> RunInfo:
        """Stop a pattern (closing its connections); returns its final summary."""
        return RunInfo.from_json(await self._call("stop", pattern_id=pattern_id))

    async def stop_all(self) -> list[RunInfo]:
        return [RunInfo.from_json(r) for r in await self._call("stop_all")]

    async def list(self) -> list[RunInfo]:
        """Running patterns and the most recent finished ones, with cumulative figures."""
        return [RunInfo.from_json(r) for r in await self._call("list")]

    async def get(self, pattern_id: str) -> RunInfo:
        return RunInfo.from_json(await self._call("get", pattern_id=pattern_id))

    async def histograms(self, pattern_id: str) -> dict[str, str]:
        """A pattern's cumulative HDR histograms ("latency", "corrected", "ttfb", "connect"; the
        empty ones left out) as ``HdrHistogram.encode()`` base64 text, up to its last fold (all
        of it once it has finished). KeyError for an unknown id."""
        result = await self._call("histograms", pattern_id=pattern_id)
        return {str(k): str(v) for k, v in result.items()}

    async def shutdown(self) -> None:
        await self._call("shutdown")

    async def frames(self) -> AsyncIterator[StatsFrame]:
        """Yield stats frames (every 250 ms) until the connection closes. A slow consumer
        loses the oldest frames beyond FRAME_QUEUE, never blocks the runner."""
        q: collections.deque[StatsFrame] = collections.deque(maxlen=FRAME_QUEUE)
        ev = asyncio.Event()
        self._queues[id(q)] = (q, ev)
        try:
            await self._ensure_subscribed()
            while True:
                while q:
                    yield q.popleft()
                if self._closed:
                    return
                ev.clear()
                await ev.wait()
        finally:
            self._queues.pop(id(q), None)

    async def on_frame(self, callback: Callable[[StatsFrame], object]) -> Callable[[], None]:
        """Call ``callback(frame)`` (in the event loop) for every frame; returns an
        unsubscribe function."""
        self._callbacks.append(callback)
        await self._ensure_subscribed()

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)
        return unsubscribe

    async def close(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()
        self._read_task.cancel()
        await asyncio.gather(self._read_task, return_exceptions=True)


class TrafficRunner:
    """Owns one runner subprocess.

    ``start()`` spawns ``python -m mpmcore.traffic.runner`` with exec (no fork of the caller's
    threads), passing the read end of a pipe: when this process dies, however it dies, the pipe
    closes and the runner exits by itself. ``close()`` asks politely (SIGTERM to the pid we
    spawned), waits up to a deadline, then SIGKILLs that pid and reaps it.
    """

    def __init__(self, socket_path: str | None = None, *, python: str = sys.executable,
                 stderr: int | IO[Any] | None = None, env: dict[str, str] | None = None) -> None:
        self._tmpdir: str | None = None
        if socket_path is None:
            self._tmpdir = tempfile.mkdtemp(prefix="mpmlab-traffic-")
            socket_path = os.path.join(self._tmpdir, "runner.sock")
        self.socket_path = socket_path
        self.python = python
        self.stderr = stderr
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._watch_w: int | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 15.0) -> TrafficRunner:
        if self.proc is not None:
            raise TrafficError("runner already started")
        r, w = os.pipe()
        os.set_inheritable(r, True)
        cmd = [self.python, "-m", "mpmcore.traffic.runner", "--socket", self.socket_path,
               "--parent-pid", str(os.getpid()), "--watch-fd", str(r)]
        env = dict(os.environ if self.env is None else self.env)
        pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            self.proc = subprocess.Popen(cmd, pass_fds=(r,), stdin=subprocess.DEVNULL,
                                         stderr=self.stderr, env=env, close_fds=True)
        finally:
            os.close(r)
        self._watch_w = w
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self._cleanup()
                raise TrafficError(f"traffic runner exited at start-up with status {code}")
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(0.5)
                    s.connect(self.socket_path)
                break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise TrafficError(f"traffic runner did not answer on {self.socket_path} within {timeout}s")
            time.sleep(0.02)
        return self

    async def client(self) -> TrafficClient:
        return await TrafficClient.connect(self.socket_path)

    def close(self, timeout: float = 8.0) -> int | None:
        """Stop the runner (by its pid) and reap it; returns its exit status."""
        proc = self.proc
        if proc is None:
            self._cleanup()
            return None
        terminate(proc, timeout)
        self._cleanup()
        return proc.returncode

    def _cleanup(self) -> None:
        if self._watch_w is not None:
            os.close(self._watch_w)
            self._watch_w = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> TrafficRunner:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # last resort; close() is the contract
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(2)
        except Exception:
            pass
