"""Unit tests for the built-in content (mpmcore.content.handlers), called with real Request objects."""

from __future__ import annotations

import time

import pytest

from mpmcore.content import handlers as H
from mpmcore.content.handlers import MAX_BYTES, MAX_CPU_MS, MAX_SLEEP_MS, Handlers
from mpmcore.http.protocol import HTTPConnection, Request, Response


def call(target: str, method: str = "GET", body: bytes = b"", h: Handlers | None = None) -> Response:
    return (h or Handlers())(Request(method, target, body=body))


def ctype(resp: Response) -> str:
    return dict((k.lower(), v) for k, v in resp.headers)["content-type"]


def text(resp: Response) -> str:
    return bytes(resp.body).decode()


def test_index():
    r = call("/")
    assert r.status == 200 and ctype(r).startswith("text/html")
    for link in ("/bytes/", "/sleep?ms=", "/cpu?ms=", "/server-status", "/health"):
        assert link in text(r)


def test_health():
    r = call("/health")
    assert (r.status, bytes(r.body)) == (200, b"OK")


@pytest.mark.parametrize("n", [0, 1, 1000, 65536, MAX_BYTES])
def test_bytes_sizes(n):
    r = call(f"/bytes/{n}")
    assert r.status == 200 and len(r.body) == n
    assert ctype(r) == "application/octet-stream"


def test_bytes_are_slices_of_one_buffer():
    a, b = call("/bytes/100").body, call("/bytes/200").body
    assert isinstance(a, memoryview) and isinstance(b, memoryview)
    assert a.obj is b.obj  # no per-request allocation of n bytes
    assert bytes(a) == bytes(b[:100])


@pytest.mark.parametrize("arg", ["-1", str(MAX_BYTES + 1), "abc", "", "1.5", "+5", " 5", "1e3",
                                 "99999999999999999999", "\u0661\u0662", "10/x"])
def test_bytes_bad(arg):
    r = call(f"/bytes/{arg}")
    assert r.status == 400
    assert "n (/bytes/{n})" in text(r) and str(MAX_BYTES) in text(r)


def test_sleep_waits():
    t0 = time.monotonic()
    r = call("/sleep?ms=50")
    assert r.status == 200 and time.monotonic() - t0 >= 0.045
    assert "slept 50 ms" in text(r)


def test_sleep_zero_and_post_body_size():
    r = call("/sleep?ms=0", method="POST", body=b"x" * 123)
    assert r.status == 200 and "123 bytes" in text(r)


def test_cpu_burns_cpu():
    t0, w0 = time.thread_time(), time.monotonic()
    r = call("/cpu?ms=30")
    used, wall = time.thread_time() - t0, time.monotonic() - w0
    assert r.status == 200 and "sha256" in text(r)
    # stops at 30 ms of thread CPU or of wall time, whichever comes first (a loaded box: wall)
    assert used >= 0.029 or wall >= 0.029
    # it burns CPU while it runs, where /sleep for as long burns next to none. (Not an absolute
    # figure: at load average 15 on 2 cores the thread got 4.8 ms of CPU in its 30 ms of wall time.)
    t0 = time.thread_time()
    assert call("/sleep?ms=30").status == 200
    slept = time.thread_time() - t0
    assert used > 2 * slept and used > 0.0005, (used, slept)


def test_cpu_zero():
    assert call("/cpu?ms=0").status == 200


@pytest.mark.parametrize("route,limit", [("/sleep", MAX_SLEEP_MS), ("/cpu", MAX_CPU_MS)])
@pytest.mark.parametrize("query", ["", "?ms=", "?ms=-1", "?ms=abc", "?ms=1.5", "?other=1", "?ms=%20",
                                   "?ms=LIMIT+1", "?ms=1&ms=2"])
def test_ms_validation(route, limit, query):
    query = query.replace("LIMIT+1", str(limit + 1))
    r = call(route + query)
    assert r.status == 400
    assert "ms" in text(r)
    if "&ms=" not in query:
        assert f"0 to {limit}" in text(r)


def test_long_query_refused():
    r = call("/sleep?ms=1&" + "x" * (H.MAX_QUERY_LEN + 1))
    assert r.status == 400


def test_server_status_delegates():
    seen = []

    def status(req: Request) -> Response:
        seen.append(req.query)
        return Response(200, [("Content-Type", "text/plain")], b"Scoreboard: _\n")

    h = Handlers(server_status=status)
    r = call("/server-status?auto", h=h)
    assert r.status == 200 and seen == ["auto"]
    assert call("/server-status", method="POST", h=h).status == 405


def test_server_status_absent_is_404():
    assert call("/server-status").status == 404


@pytest.mark.parametrize("path", ["/nope", "/bytes", "/health/x", "/sleepy", "//"])
def test_unknown_path_404(path):
    assert call(path).status == 404


@pytest.mark.parametrize("path", ["/", "/bytes/1", "/sleep?ms=0", "/cpu?ms=0", "/health"])
def test_head_allowed(path):
    assert call(path, method="HEAD").status == 200


@pytest.mark.parametrize("path,post_ok", [("/", True), ("/sleep?ms=0", True), ("/cpu?ms=0", True),
                                          ("/bytes/1", False), ("/health", False)])
def test_post(path, post_ok):
    r = call(path, method="POST", body=b"abc")
    if post_ok:
        assert r.status == 200
    else:
        assert r.status == 405
        allow = dict(r.headers)["Allow"]
        assert "POST" not in allow and "GET" in allow and "HEAD" in allow


@pytest.mark.parametrize("method", ["PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"])
def test_other_methods_405_with_allow(method):
    r = call("/", method=method)
    assert r.status == 405
    assert dict(r.headers)["Allow"] == "GET, HEAD, POST"
    assert method in text(r)


def test_bounds_are_module_constants():
    assert H.MAX_BYTES == 64 * 1024 * 1024 and H.MAX_SLEEP_MS == 60_000 and H.MAX_CPU_MS == 10_000


def test_end_to_end_through_connection():
    conn = HTTPConnection()
    h = Handlers()
    conn.receive_data(b"GET /bytes/10 HTTP/1.1\r\nHost: t\r\n\r\nHEAD /bytes/7 HTTP/1.1\r\nHost: t\r\n\r\n", 1.0)
    out = conn.send_response(req := conn.next_event(), h(req))
    assert out.endswith(b"\r\n\r\n" + bytes(call("/bytes/10").body)) and b"Content-Length: 10\r\n" in out
    out = conn.send_response(req := conn.next_event(), h(req))
    assert out.endswith(b"\r\n\r\n") and b"Content-Length: 7\r\n" in out
