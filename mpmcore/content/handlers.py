"""The built-in content mpmlab serves: small, predictable routes that load a server in known ways.

    /                 what mpmlab is, with links
    /bytes/{n}        n bytes of payload (network-bound)
    /sleep?ms=N       waits N ms (I/O-bound: the worker is held but the CPU is free)
    /cpu?ms=N         hashes for N ms (CPU-bound: the worker and a core are held)
    /server-status    mod_status, delegated to the callable given at construction
    /health           "OK"

Every parameter is checked; a bad one gets a 400 naming the parameter and its range.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from urllib.parse import parse_qs

from mpmcore.http.protocol import Request, Response

__all__ = ["MAX_BYTES", "MAX_CPU_MS", "MAX_SLEEP_MS", "Handlers"]

# /bytes/{n}: largest payload. Bounded so one request cannot ask for unbounded memory or time;
# every response is a slice of one buffer of this size allocated once per process.
MAX_BYTES = 64 * 1024 * 1024
# /sleep: longest wait, one minute (Apache's default Timeout is 60 s; longer would only measure that).
MAX_SLEEP_MS = 60_000
# /cpu: longest busy loop, 10 s of CPU: enough to saturate workers, short enough to stay interactive.
MAX_CPU_MS = 10_000
# /cpu hashes this many bytes per round between clock reads (~10 us per round: fine-grained, cheap).
CPU_CHUNK = 4096
# Query strings longer than this are refused before parsing (the routes take one short parameter).
MAX_QUERY_LEN = 1024

_GET_METHODS = ("GET", "HEAD")
_POST_METHODS = ("GET", "HEAD", "POST")

_TEXT = [("Content-Type", "text/plain; charset=utf-8")]
_HTML = [("Content-Type", "text/html; charset=utf-8")]
_OCTETS = [("Content-Type", "application/octet-stream")]

_payload_cache: memoryview | None = None


def _payload() -> memoryview:
    """One MAX_BYTES buffer per process, made on first use (forked children share its pages)."""
    global _payload_cache
    if _payload_cache is None:
        pattern = b"mpmlab-payload-0123456789abcdefghijklmnopqrstuvwxyz\n"  # readable if dumped
        reps = MAX_BYTES // len(pattern) + 1
        _payload_cache = memoryview((pattern * reps)[:MAX_BYTES])
    return _payload_cache


def warm_up() -> None:
    """Build the payload before fork(): the master calls this so every child shares its pages
    instead of building (and holding) its own 64 MiB copy on its first /bytes request."""
    _payload()


_INDEX = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mpmlab</title></head>
<body>
<h1>mpmlab</h1>
<p>An embedded HTTP/1.1 server that reproduces Apache httpd's multi-processing modules
(prefork, worker, event) with a live scoreboard, so you can watch how each one schedules
connections under real traffic.</p>
<ul>
<li><a href="/bytes/1024">/bytes/{{n}}</a> &ndash; n bytes (0 to {MAX_BYTES})</li>
<li><a href="/sleep?ms=100">/sleep?ms=N</a> &ndash; wait N ms, I/O-bound (0 to {MAX_SLEEP_MS})</li>
<li><a href="/cpu?ms=50">/cpu?ms=N</a> &ndash; hash for N ms, CPU-bound (0 to {MAX_CPU_MS})</li>
<li><a href="/server-status">/server-status</a> &ndash; the scoreboard, like mod_status
(<a href="/server-status?auto">?auto</a>)</li>
<li><a href="/health">/health</a> &ndash; liveness check</li>
</ul>
</body></html>
""".encode()


def _text(status: int, text: str, extra: list[tuple[str, str]] | None = None) -> Response:
    headers = list(_TEXT)
    if extra:
        headers.extend(extra)
    return Response(status, headers, (text + "\n").encode("utf-8"))


def _bad_param(name: str, low: int, high: int, got: str | None) -> Response:
    shown = "missing" if got is None else repr(got[:40])
    return _text(400, f"parameter {name} must be a whole number from {low} to {high} (got {shown})")


def _int_param(value: str | None, low: int, high: int) -> int | None:
    """Strict decimal in [low, high], else None (no signs, spaces, exponents or underscores)."""
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 12:
        return None
    n = int(value)
    return n if low <= n <= high else None


def _query_param(request: Request, name: str) -> tuple[str | None, Response | None]:
    """The single value of `name` in the query, or an error response."""
    if len(request.query) > MAX_QUERY_LEN:
        return None, _text(400, f"query string longer than {MAX_QUERY_LEN} bytes")
    values = parse_qs(request.query, keep_blank_values=True).get(name)
    if values is None:
        return None, None
    if len(values) > 1:
        return None, _text(400, f"parameter {name} given {len(values)} times; give it once")
    return values[0], None


class Handlers:
    """Routes a Request to the built-in content. Thread-safe: keeps no per-request state."""

    def __init__(self, server_status: Callable[[Request], Response] | None = None) -> None:
        self.server_status = server_status

    def __call__(self, request: Request) -> Response:
        path = request.path
        method = request.method
        if path == "/":
            return self._check(method, _POST_METHODS) or self._index(request)
        if path.startswith("/bytes/"):
            return self._check(method, _GET_METHODS) or self._bytes(path[len("/bytes/") :])
        if path == "/sleep":
            return self._check(method, _POST_METHODS) or self._sleep(request)
        if path == "/cpu":
            return self._check(method, _POST_METHODS) or self._cpu(request)
        if path == "/health":
            return self._check(method, _GET_METHODS) or Response(200, list(_TEXT), b"OK")
        if path == "/server-status":
            if self.server_status is None:
                return _text(404, "/server-status is not enabled")
            # mod_status answers GET only (HEAD is GET without the body).
            return self._check(method, _GET_METHODS) or self.server_status(request)
        return _text(404, f"no such path: {path[:100]}")

    # -- routes ------------------------------------------------------------------------------------

    @staticmethod
    def _check(method: str, allowed: tuple[str, ...]) -> Response | None:
        if method in allowed:
            return None
        allow = ", ".join(allowed)
        return _text(405, f"method {method} not allowed here; allowed: {allow}", [("Allow", allow)])

    @staticmethod
    def _index(request: Request) -> Response:
        headers = list(_HTML)
        if request.method == "POST":
            headers.append(("X-Request-Body-Bytes", str(len(request.body))))
        return Response(200, headers, _INDEX)

    @staticmethod
    def _bytes(arg: str) -> Response:
        n = _int_param(arg, 0, MAX_BYTES)
        if n is None:
            return _bad_param("n (/bytes/{n})", 0, MAX_BYTES, arg)
        return Response(200, list(_OCTETS), _payload()[:n])

    @staticmethod
    def _sleep(request: Request) -> Response:
        raw, err = _query_param(request, "ms")
        if err:
            return err
        ms = _int_param(raw, 0, MAX_SLEEP_MS)
        if ms is None:
            return _bad_param("ms", 0, MAX_SLEEP_MS, raw)
        time.sleep(ms / 1000.0)
        return _text(200, f"slept {ms} ms; request body {len(request.body)} bytes")

    @staticmethod
    def _cpu(request: Request) -> Response:
        raw, err = _query_param(request, "ms")
        if err:
            return err
        ms = _int_param(raw, 0, MAX_CPU_MS)
        if ms is None:
            return _bad_param("ms", 0, MAX_CPU_MS, raw)
        # Burn until `ms` of this thread's CPU time OR of wall time has passed, whichever is first:
        # CPU time is the honest measure, wall time bounds the request when threads share a core.
        budget = ms / 1000.0
        cpu_end = time.thread_time() + budget
        wall_end = time.monotonic() + budget
        digest = hashlib.sha256()
        block = b"\x00" * CPU_CHUNK
        rounds = 0
        while time.thread_time() < cpu_end and time.monotonic() < wall_end:
            digest.update(block)
            block = digest.digest() * (CPU_CHUNK // 32)  # chain: each round depends on the last
            rounds += 1
        return _text(
            200,
            f"cpu {ms} ms: {rounds} sha256 rounds of {CPU_CHUNK} bytes, digest "
            f"{digest.hexdigest()[:16]}; request body {len(request.body)} bytes",
        )
