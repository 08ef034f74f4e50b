"""What a child serves: the built-in handlers, with /server-status read from the live scoreboard."""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable

from mpmcore import __version__
from mpmcore.content.handlers import Handlers
from mpmcore.content.unsafe import make_unsafe_handler
from mpmcore.http.protocol import Request, Response
from mpmcore.mpm.common import ChildEnv
from mpmcore.scoreboard import ScoreboardReader, Snapshot
from mpmcore.status import modstatus as status
from mpmcore.status.modstatus import ServerInfo

SERVER_VERSION = f"mpmlab/{__version__} (Unix)"
BUILT = datetime.datetime.fromtimestamp(os.path.getmtime(__file__)).strftime("%b %d %Y %H:%M:%S")


def server_info(snap: Snapshot, server_name: str, extended: bool = True) -> ServerInfo:
    g = snap.glob
    mpm = snap.mpm
    return ServerInfo(server_name=server_name, server_version=SERVER_VERSION, built=BUILT, mpm=mpm,
                      max_request_workers=g.max_request_workers,
                      threads_per_child=1 if mpm == "prefork" else g.threads_per_child,
                      server_limit=g.server_limit, extended_status=extended)


def make_handler(env: ChildEnv) -> Callable[[Request], Response]:
    """Called once in each child after fork(): the handler its threads share."""
    reader = ScoreboardReader.from_mmap(env.scoreboard.mm)
    host = env.vhost.rpartition(":")[0].strip("[]") or "localhost"
    extended = bool(env.config["ExtendedStatus"])
    cache: dict[str, Snapshot] = {}

    def snapshot() -> Snapshot:
        snap = reader.snapshot()
        cache["snap"] = snap
        return snap

    def info() -> ServerInfo:
        snap = cache.get("snap") or reader.snapshot()
        return server_info(snap, host, extended)

    def server_status(req: Request) -> Response:
        resp: Response = status.handle_status_request(req, snapshot, info)
        return resp

    unsafe = make_unsafe_handler(env.config, env.fcgi_socket, env.log)
    handlers = Handlers(server_status=server_status)

    def handle(req: Request) -> Response:
        if req.path == "/unsafe":
            return unsafe(req)
        return handlers(req)

    return handle
