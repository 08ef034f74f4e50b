"""/unsafe: a handler written the way thread-unsafe modules are (mod_php with non-thread-safe
extensions): it keeps the request's state in module globals across a blocking call.

Under prefork one process serves one request at a time, so the globals are always its own. Under
worker and event, threads of one child share them, so a concurrent request overwrites them and the
reply carries another request's data. The reply says so (``X-Unsafe-Corrupted: 1`` and the JSON
body), so the traffic generator and the dashboard can count it.

The way out Apache users took, "use FastCGI and php-fpm": with ``UnsafeFastCGIPool N`` the child
forwards /unsafe over FastCGI to a pool of N single-threaded processes (see ``fcgi_pool.py``), and the
answers are right again under any MPM.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from mpmcore.content.fcgi import FastCGIError, fcgi_call
from mpmcore.directives import Config
from mpmcore.http.protocol import Request, Response

# The "database call" the module blocks in while its globals are exposed.
DEFAULT_WORK_MS = 20
MAX_WORK_MS = 2000

# The module globals a thread-unsafe extension keeps its per-request state in.
_current_request_id: str | None = None
_current_user: str | None = None


def _params(req: Request) -> tuple[str, int]:
    q = urllib.parse.parse_qs(req.query, keep_blank_values=True)
    rid = (q.get("id") or [""])[0][:64] or f"{os.getpid()}-{time.monotonic_ns()}"
    try:
        ms = int((q.get("ms") or [str(DEFAULT_WORK_MS)])[0])
    except ValueError:
        raise ValueError(f"ms must be an integer 0..{MAX_WORK_MS}") from None
    if not 0 <= ms <= MAX_WORK_MS:
        raise ValueError(f"ms must be an integer 0..{MAX_WORK_MS}")
    return rid, ms


def unsafe_work(rid: str, ms: int) -> dict[str, Any]:
    """The thread-unsafe module itself: state in globals, a blocking call in the middle."""
    global _current_request_id, _current_user
    _current_request_id = rid
    _current_user = f"user-for-{rid}"
    time.sleep(ms / 1000.0)  # the blocking call (a database query, say)
    got_id, got_user = _current_request_id, _current_user
    return {"expected": rid, "got": got_id, "user": got_user, "corrupted": got_id != rid or got_user != f"user-for-{rid}",
            "pid": os.getpid()}


def _reply(result: dict[str, Any], via: str) -> Response:
    result["served_by"] = via
    return Response(200, [("Content-Type", "application/json"),
                          ("X-Unsafe-Corrupted", "1" if result["corrupted"] else "0"),
                          ("Cache-Control", "no-store")], json.dumps(result).encode() + b"\n")


#: the child's log(module, level, message)
ChildLog = Callable[[str, str, str], None]


def _bad_gateway(reason: str, log: ChildLog | None) -> Response:
    """mod_proxy_fcgi's answer to a backend that answered wrong: 502, the reason in the error log."""
    if log is not None:
        log("proxy_fcgi", "error", f"bad response from the FastCGI pool: {reason}")
    return Response(502, [("Content-Type", "text/plain")], f"FastCGI pool sent a bad response: {reason}\n".encode())


def make_unsafe_handler(config: Config, fcgi_socket: str | None,
                        log: ChildLog | None = None) -> Callable[[Request], Response]:
    """/unsafe in this child: in-process, or forwarded to the FastCGI pool at ``fcgi_socket``. A
    pool that cannot be reached is a 503; one whose answer is malformed, a 502 (logged)."""
    pool = int(config.values.get("UnsafeFastCGIPool", 0) or 0)
    sock_path = fcgi_socket

    def handle(req: Request) -> Response:
        if req.method not in ("GET", "HEAD"):
            return Response(405, [("Allow", "GET, HEAD"), ("Content-Type", "text/plain")], b"GET or HEAD only\n")
        try:
            rid, ms = _params(req)
        except ValueError as e:
            return Response(400, [("Content-Type", "text/plain")], f"{e}\n".encode())
        if pool and sock_path:
            try:
                status, body = fcgi_call(sock_path, {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/unsafe",
                                                     "QUERY_STRING": urllib.parse.urlencode({"id": rid, "ms": ms})})
            except FastCGIError as e:
                return _bad_gateway(str(e), log)
            except OSError as e:
                return Response(503, [("Content-Type", "text/plain")], f"FastCGI pool unavailable: {e}\n".encode())
            if status != 200:
                return _bad_gateway(f"status {status}: {body[:200].decode('latin-1').strip()}", log)
            try:
                result = json.loads(body)
            except ValueError as e:
                return _bad_gateway(f"not JSON ({e})", log)
            if not isinstance(result, dict) or "corrupted" not in result:
                return _bad_gateway("JSON without the module's fields", log)
            return _reply(result, "fastcgi")
        return _reply(unsafe_work(rid, ms), "in-process")

    return handle
