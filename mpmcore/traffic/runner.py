"""The traffic runner process: ``python -m mpmcore.traffic.runner --socket PATH``.

It owns an asyncio loop (uvloop when available) that runs nothing but the traffic, so the
generator never competes with the dashboard's event loop. Control is a Unix socket speaking
newline-delimited JSON (one object per line):

    request   {"id": 7, "op": "start", "pattern": "steady", "params": {...}}
    response  {"id": 7, "ok": true, "result": ...}
              {"id": 7, "ok": false, "error": {"type": "ValueError", "message": "..."}}
    frame     {"type": "stats", "seq": ..., ...}        (pushed every 250 ms after "subscribe")

ops: ping, catalogue, start(pattern, params), update(id, params), stop(id), stop_all, list,
get(id), histograms(id) (the cumulative HDR histograms, encoded), subscribe, unsubscribe, shutdown.

It exits by itself when its parent goes away: the parent passes the read end of a pipe whose
write end only it holds (``--watch-fd``); EOF on it means the parent is gone. ``--parent-pid`` is
checked every second as a second line of defence. SIGINT is ignored (a Ctrl-C in the CLI's
terminal is the CLI's business; it stops the patterns and then closes the runner); SIGTERM stops
all patterns and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable

from mpmcore.traffic.catalogue import catalogue_json
from mpmcore.traffic.engine import Engine
from mpmcore.traffic.limits import FRAME_INTERVAL, MAX_CONNECTIONS
from mpmcore.traffic.runstats import Json
from mpmcore.traffic.scenarios import SCENARIOS

#: A subscriber whose socket buffer holds more than this is behind; frames are skipped for it
#: rather than buffered without bound.
MAX_SUBSCRIBER_BACKLOG = 4 << 20
MAX_LINE = 1 << 20


def raise_nofile(wanted: int = MAX_CONNECTIONS + 512) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards ``wanted`` (never above the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class RunnerServer:
    def __init__(self, socket_path: str, parent_pid: int | None, watch_fd: int | None) -> None:
        self.socket_path = socket_path
        self.parent_pid = parent_pid
        self.watch_fd = watch_fd
        self.engine = Engine(SCENARIOS)
        self.subscribers: set[asyncio.StreamWriter] = set()
        self.done = asyncio.Event()
        self.server: asyncio.AbstractServer | None = None
        #: the control ops (the module docstring lists them) and their handlers
        self.ops: dict[str, Callable[[Json, Json, asyncio.StreamWriter], Awaitable[object]]] = {
            "ping": self.op_ping, "catalogue": self.op_catalogue, "start": self.op_start,
            "update": self.op_update, "stop": self.op_stop, "stop_all": self.op_stop_all, "list": self.op_list,
            "get": self.op_get, "histograms": self.op_histograms, "subscribe": self.op_subscribe, "unsubscribe": self.op_unsubscribe,
            "shutdown": self.op_shutdown,
        }

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.done.set)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if self.watch_fd is not None:
            os.set_blocking(self.watch_fd, False)
            loop.add_reader(self.watch_fd, self._watch_readable)
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        self.server = await asyncio.start_unix_server(self._client, path=self.socket_path, limit=MAX_LINE)
        os.chmod(self.socket_path, 0o600)
        tasks = [asyncio.ensure_future(self._frames()), asyncio.ensure_future(self._watch_parent())]
        try:
            await self.done.wait()
        finally:
            for t in tasks:
                t.cancel()
            self.server.close()
            await self.engine.stop_all()
            for w in list(self.subscribers):
                w.close()
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass

    def _watch_readable(self) -> None:
        if self.watch_fd is None:  # pragma: no cover (only registered with a watch fd)
            return
        try:
            data = os.read(self.watch_fd, 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # EOF: the parent (the only writer) is gone
            asyncio.get_running_loop().remove_reader(self.watch_fd)
            self.done.set()

    async def _watch_parent(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                self.done.set()
                return

    async def _frames(self) -> None:
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        while True:
            next_t += FRAME_INTERVAL
            await asyncio.sleep(max(0.0, next_t - loop.time()))
            if next_t < loop.time() - FRAME_INTERVAL:  # fell behind (loaded loop): resync
                next_t = loop.time()
            try:
                frame = self.engine.frame()
            except Exception:
                traceback.print_exc()
                continue
            if not self.subscribers:
                continue
            line = (json.dumps(frame.to_json(), separators=(",", ":")) + "\n").encode()
            for w in list(self.subscribers):
                if w.is_closing():
                    self.subscribers.discard(w)
                elif w.transport.get_write_buffer_size() < MAX_SUBSCRIBER_BACKLOG:
                    w.write(line)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    break
                if not line:
                    break
                try:
                    msg = json.loads(line)
                    if not isinstance(msg, dict):
                        raise ValueError("a message must be a JSON object")
                except ValueError as exc:
                    self._send(writer, {"id": None, "ok": False,
                                        "error": {"type": "ValueError", "message": f"bad message: {exc}"}})
                    continue
                reply = await self._handle(msg, writer)
                self._send(writer, reply)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.subscribers.discard(writer)
            writer.close()

    def _send(self, writer: asyncio.StreamWriter, obj: Json) -> None:
        if not writer.is_closing():
            writer.write((json.dumps(obj, separators=(",", ":")) + "\n").encode())

    async def _handle(self, msg: Json, writer: asyncio.StreamWriter) -> Json:
        mid = msg.get("id")
        op = msg.get("op")
        try:
            params = msg.get("params") or {}
            if not isinstance(params, dict):
                raise ValueError("params must be a JSON object")
            handler = self.ops.get(op) if isinstance(op, str) else None
            if handler is None:
                raise ValueError(f"unknown op {op!r}")
            result = await handler(msg, params, writer)
            return {"id": mid, "ok": True, "result": result}
        except (ValueError, KeyError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            return {"id": mid, "ok": False, "error": {"type": type(exc).__name__, "message": message}}
        except Exception as exc:  # a bug: report it, keep serving
            traceback.print_exc()
            return {"id": mid, "ok": False, "error": {"type": "RuntimeError", "message": f"{type(exc).__name__}: {exc}"}}

    # -- one handler per op: (the message, its params, the client's writer) -> the reply's result --
    async def op_ping(self, msg: Json, params: Json, writer: asyncio.StreamWriter) -> Json:
        return {"pid": os.getpid()}

    async def op_catalogue(self, msg: Json, params: Json, writer: asyncio.StreamWriter) -> Json:
        return catalogue_json()

    async def op_start(self, msg: Json, params: Json, writer: asyncio.StreamWriter) -> str:
        return await self.engine.start(str(msg.get("pattern")), params)

    async def op_update(self, msg: Json, params: Json, writer: asyncio.StreamWriter) -> Json:
        return self.engine.update(str(msg.get("pattern_id")), params).to_json()

    async def op_stop(self, msg: Json, params: Json, writer: asyncio.StreamWriter) -> Json:
        return (await self.engine.stop(str(msg.get("pattern_id")))).to_json()

    async def op_stop_all(self, msg: Json, params: Json, writer: asyncio.StreamWriter) -> list[Json]:
        return [r.to_json() for r in await self.engine.stop_all()]

    async def op_list(self, msg: Json, params: Json, writer: asyncio.StreamWriter) -> list[Json]:
        return [r.to_json() for r in self.engine.list()]

    async def op_get(self, msg: Json, params: Json, writer: asyncio.StreamWriter) -> Json:
        return self.engine.get(str(msg.get("pattern_id"))).to_json()

    async def op_histograms(self, msg: Json, params: Json, writer: asyncio.StreamWriter) -> dict[str, str]:
        return self.engine.histograms(str(msg.get("pattern_id")))

    async def op_subscribe(self, msg: Json, params: Json, writer: asyncio.StreamWriter) -> bool:
        self.subscribers.add(writer)
        return True

    async def op_unsubscribe(self, msg: Json, params: Json, writer: asyncio.StreamWriter) -> bool:
        self.subscribers.discard(writer)
        return True

    async def op_shutdown(self, msg: Json, params: Json, writer: asyncio.StreamWriter) -> bool:
        self.done.set()
        return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mpmcore.traffic.runner")
    ap.add_argument("--socket", required=True, help="Unix socket path to listen on")
    ap.add_argument("--parent-pid", type=int, default=None, help="exit when this is no longer our parent")
    ap.add_argument("--watch-fd", type=int, default=None, help="exit on EOF of this inherited fd")
    ap.add_argument("--no-uvloop", action="store_true")
    args = ap.parse_args(argv)
    raise_nofile()
    server = RunnerServer(args.socket, args.parent_pid, args.watch_fd)
    try:
        # optional: a dependency on Linux and macOS only (pyproject.toml), the runner works without it
        import uvloop
    except ImportError:
        uvloop = None  # type: ignore[assignment]  # (the module is absent: fall back to asyncio's loop)
    if uvloop is not None and not args.no_uvloop:
        uvloop.run(server.serve())
    else:
        asyncio.run(server.serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
