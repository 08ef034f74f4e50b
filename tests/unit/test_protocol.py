"""Unit tests for the sans-IO HTTP/1.1 connection (mpmcore.http.protocol): the real engine, no mocks."""

from __future__ import annotations

import pytest

from mpmcore.http.protocol import (
    CLOSED,
    NEED_DATA,
    HTTPConnection,
    Limits,
    Phase,
    ProtocolError,
    Request,
    RequestReadTimeout,
    Response,
)

GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def events(conn: HTTPConnection) -> list:
    """Drain every event up to NEED_DATA or CLOSED (included)."""
    out = []
    while True:
        ev = conn.next_event()
        out.append(ev)
        if ev is NEED_DATA or ev is CLOSED:
            return out


def feed(data: bytes, conn: HTTPConnection | None = None, now: float = 1.0, **kw) -> list:
    conn = conn or HTTPConnection(**kw)
    conn.receive_data(data, now)
    return events(conn)


def one(data: bytes, **kw):
    evs = feed(data, **kw)
    return evs[0]


def parse_response(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(": ")
        assert k.lower() not in headers, f"duplicate header {k}"
        headers[k.lower()] = v
    return lines[0], headers, body


def respond(conn, req, status=200, body=b"hello", **kw):
    return parse_response(conn.send_response(req, Response(status, [("Content-Type", "text/plain")], body, **kw)))


# --- requests ----------------------------------------------------------------------------------------


def test_simple_get_fields():
    req = one(b"GET /a/b%20c?x=1&y=2 HTTP/1.1\r\nHost: example\r\nX-Traffic-Pattern: "
              + b"p" * 40 + b"\r\nAccept: */*\r\n\r\n")
    assert isinstance(req, Request)
    assert req.method == "GET"
    assert req.target == "/a/b%20c?x=1&y=2"
    assert req.path == "/a/b%20c"
    assert req.query == "x=1&y=2"
    assert req.http_version == "1.1"
    assert req.headers[0] == ("host", "example")
    assert req.header("ACCEPT") == "*/*"
    assert req.header("missing") is None
    assert req.host == "example"
    assert req.traffic_pattern == "p" * 23
    assert req.request_line == "GET /a/b%20c?x=1&y=2 HTTP/1.1"
    assert req.body == b""
    assert req.wants_keep_alive is True


def test_headers_latin1_and_repeated_joined():
    req = one(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: caf\xe9\r\nX-B: 1\r\nx-b: 2\r\n\r\n")
    assert req.header("x-a") == "caf\u00e9"
    assert req.header("x-b") == "1, 2"


def test_absolute_form_target():
    req = one(b"GET http://example.com/p?q HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert req.path == "/p" and req.query == "q"


def test_request_constructed_by_hand_derives_fields():
    r = Request("GET", "/x?y=1")
    assert (r.path, r.query, r.wants_keep_alive) == ("/x", "y=1", True)
    r10 = Request("GET", "/", http_version="1.0", headers=[("connection", "Keep-Alive")])
    assert r10.wants_keep_alive is True


def test_need_data_then_request():
    conn = HTTPConnection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHo", 1.0)
    assert conn.next_event() is NEED_DATA
    assert conn.phase is Phase.HEADER
    conn.receive_data(b"st: t\r\n\r\n", 1.5)
    assert isinstance(conn.next_event(), Request)
    assert conn.phase is Phase.IDLE
    assert conn.next_event() is NEED_DATA


def test_content_length_body():
    req = one(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
    assert req.body == b"hello"


def test_chunked_body_dechunked_and_trailers_dropped():
    data = (b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n")
    req = one(data)
    assert req.body == b"hello world"
    assert req.header("x-trailer") is None


def test_body_phase_and_split_body():
    conn = HTTPConnection()
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc", 1.0)
    assert conn.next_event() is NEED_DATA
    assert conn.phase is Phase.BODY
    conn.receive_data(b"defghij", 2.0)
    assert conn.next_event().body == b"abcdefghij"


# --- pipelining ----------------------------------------------------------------------------------------

PIPELINE = (
    b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n"
    b"POST /2 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
    b"POST /3 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n"
    b"HEAD /4 HTTP/1.1\r\nHost: t\r\n\r\n"
    b"GET /5 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
)
EXPECTED = [("GET", "/1", b""), ("POST", "/2", b"abc"), ("POST", "/3", b"xy"), ("HEAD", "/4", b""), ("GET", "/5", b"")]


def test_pipelined_in_one_chunk_in_order():
    evs = feed(PIPELINE)
    assert [(r.method, r.path, r.body) for r in evs[:-1]] == EXPECTED
    assert evs[-1] is NEED_DATA


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_pipelined_split_into_small_pieces(size):
    conn = HTTPConnection()
    got = []
    for i in range(0, len(PIPELINE), size):
        conn.receive_data(PIPELINE[i:i + size], 1.0 + i)
        got += [e for e in events(conn) if e is not NEED_DATA]
    assert [(r.method, r.path, r.body) for r in got] == EXPECTED


def test_pipelining_backpressure_keeps_order():
    conn = HTTPConnection(limits=Limits(max_pipelined=2))
    many = b"".join(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(5))
    conn.receive_data(many, 1.0)  # one chunk: parsed at once
    conn.receive_data(b"GET /5 HTTP/1.1\r\nHost: t\r\n\r\n", 1.1)  # held back: queue is full
    conn.receive_data(b"GET /6 HTTP/1.1\r\nHost: t\r\n\r\n", 1.2)
    paths = [e.path for e in events(conn)[:-1]]
    assert paths == [f"/{i}" for i in range(7)]


def test_leading_blank_lines_ignored():
    assert one(b"\r\n\r\n" + GET).path == "/"


# --- keep-alive -----------------------------------------------------------------------------------------


def test_http11_keep_alive_default():
    conn = HTTPConnection()
    conn.receive_data(GET, 1.0)
    status, h, body = respond(conn, conn.next_event())
    assert status == "HTTP/1.1 200 OK"
    assert conn.keep_alive is True
    assert "connection" not in h and "keep-alive" not in h  # as Apache: nothing to say
    assert h["content-length"] == "5" and body == b"hello"
    assert h["server"] == "mpmlab" and h["date"].endswith(" GMT")


def test_http11_connection_close():
    conn = HTTPConnection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 1.0)
    req = conn.next_event()
    assert req.wants_keep_alive is False
    _, h, _ = respond(conn, req)
    assert h["connection"] == "close" and conn.keep_alive is False


def test_http11_explicit_keep_alive_gets_keep_alive_header():
    conn = HTTPConnection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\n\r\n", 1.0)
    _, h, _ = respond(conn, conn.next_event())
    assert h["keep-alive"] == "timeout=5, max=100"
    assert h["connection"] == "Keep-Alive"


def test_http10_default_close():
    conn = HTTPConnection()
    conn.receive_data(b"GET / HTTP/1.0\r\n\r\n", 1.0)
    req = conn.next_event()
    assert req.http_version == "1.0" and req.wants_keep_alive is False
    status, h, _ = respond(conn, req)
    assert status.startswith("HTTP/1.1 200")  # Apache answers 1.0 clients with HTTP/1.1 too
    assert h["connection"] == "close" and conn.keep_alive is False


def test_http10_keep_alive():
    conn = HTTPConnection()
    conn.receive_data(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 1.0)
    _, h, _ = respond(conn, conn.next_event())
    assert conn.keep_alive is True
    assert h["connection"] == "Keep-Alive"
    assert h["keep-alive"] == "timeout=5, max=100"


def test_max_keep_alive_requests_boundary_like_apache():
    # Measured on Apache/2.4.71 with MaxKeepAliveRequests 3: max=3, 2, 1, then the 4th closes.
    conn = HTTPConnection(limits=Limits(max_keep_alive_requests=3))
    req = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    conn.receive_data(req * 4, 1.0)
    seen = []
    for _ in range(4):
        _, h, _ = respond(conn, conn.next_event())
        seen.append((conn.keep_alive, h.get("keep-alive"), h.get("connection")))
    assert seen == [
        (True, "timeout=5, max=3", "Keep-Alive"),
        (True, "timeout=5, max=2", "Keep-Alive"),
        (True, "timeout=5, max=1", "Keep-Alive"),
        (False, None, "close"),
    ]
    assert conn.requests_completed == 4


def test_max_keep_alive_requests_unlimited():
    conn = HTTPConnection(limits=Limits(max_keep_alive_requests=0, keep_alive_timeout=15))
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\n\r\n" * 150, 1.0)
    for _ in range(150):
        _, h, _ = respond(conn, conn.next_event())
        assert conn.keep_alive
    assert h["keep-alive"] == "timeout=15"


def test_keep_alive_off():
    conn = HTTPConnection(limits=Limits(keep_alive=False))
    conn.receive_data(GET, 1.0)
    _, h, _ = respond(conn, conn.next_event())
    assert h["connection"] == "close" and conn.keep_alive is False


def test_handler_asks_close():
    conn = HTTPConnection()
    conn.receive_data(GET, 1.0)
    _, h, _ = respond(conn, conn.next_event(), close=True)
    assert h["connection"] == "close" and not conn.keep_alive


def test_status_that_drops_connection_closes():
    conn = HTTPConnection()
    conn.receive_data(GET, 1.0)
    _, h, _ = respond(conn, conn.next_event(), status=400)
    assert h["connection"] == "close" and not conn.keep_alive


def test_data_after_connection_close_is_ignored():
    conn = HTTPConnection()
    conn.receive_data(b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" + GET, 1.0)
    evs = events(conn)
    assert [e.path for e in evs[:-1]] == ["/a"]
    conn.receive_data(GET, 2.0)
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"", 3.0)
    assert conn.next_event() is CLOSED


# --- responses ------------------------------------------------------------------------------------------


def test_head_has_get_length_and_no_body():
    conn = HTTPConnection()
    conn.receive_data(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n", 1.0)
    raw = conn.send_response(conn.next_event(), Response(200, body=b"x" * 1234))
    _, h, body = parse_response(raw)
    assert h["content-length"] == "1234" and body == b""


def test_content_length_always_and_handler_hop_headers_dropped():
    conn = HTTPConnection()
    conn.receive_data(GET, 1.0)
    raw = conn.send_response(conn.next_event(), Response(
        200, [("Content-Length", "999"), ("Connection", "close"), ("X-Ok", "1")], b""))
    _, h, _ = parse_response(raw)
    assert h["content-length"] == "0" and h["x-ok"] == "1" and "connection" not in h


def test_memoryview_body_and_parts():
    conn = HTTPConnection()
    conn.receive_data(GET * 2, 1.0)
    mv = memoryview(b"abcdef")[1:4]
    assert conn.send_response(conn.next_event(), Response(200, body=mv)).endswith(b"\r\n\r\nbcd")
    head, body = conn.send_response_parts(conn.next_event(), Response(200, body=mv))
    assert body is mv and b"Content-Length: 3\r\n" in head


def test_204_has_no_body_or_length():
    conn = HTTPConnection()
    conn.receive_data(GET, 1.0)
    status, h, body = parse_response(conn.send_response(conn.next_event(), Response(204, body=b"zz")))
    assert status == "HTTP/1.1 204 No Content" and "content-length" not in h and body == b""


def test_date_cached_per_second(monkeypatch):
    import mpmcore.http.protocol as p
    calls = []
    real = p.time.time
    monkeypatch.setattr(p.time, "time", lambda: calls.append(1) or real())
    monkeypatch.setattr(p, "_date_cache", (-1, ""))
    conn = HTTPConnection(now=500.0)
    conn.receive_data(GET * 3, 500.1)
    conn.send_response(conn.next_event(), Response(200))
    conn.send_response(conn.next_event(), Response(200))
    assert len(calls) == 1
    conn.receive_data(b"", 501.2)
    conn.send_response(conn.next_event(), Response(200))
    assert len(calls) == 2


def test_send_error_page():
    conn = HTTPConnection(server="mpmlab/test")
    err = one(b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 9000 + b"\r\n\r\n")
    assert isinstance(err, ProtocolError) and err.status == 431
    conn.keep_alive = True
    status, h, body = parse_response(conn.send_error(err))
    assert status == "HTTP/1.1 431 Request Header Fields Too Large"
    assert h["connection"] == "close" and h["server"] == "mpmlab/test"
    assert h["content-type"].startswith("text/html")
    assert int(h["content-length"]) == len(body)
    assert b"LimitRequestFieldSize 8190" in body
    assert conn.keep_alive is False


def test_send_error_escapes_reason():
    raw = HTTPConnection().send_error(ProtocolError(400, "<script>"))
    assert b"<script>" not in raw and b"&lt;script&gt;" in raw


# --- limits --------------------------------------------------------------------------------------------


def test_limit_request_line_414():
    err = one(b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert err.status == 414 and "LimitRequestLine" in err.reason


def test_limit_request_line_exact_boundary():
    # "GET " + url + " HTTP/1.1" == 8190 is allowed, one more byte is not
    url = b"/" + b"a" * (8190 - 4 - 9 - 1)
    assert isinstance(one(b"GET " + url + b" HTTP/1.1\r\nHost: t\r\n\r\n"), Request)
    assert one(b"GET " + url + b"a HTTP/1.1\r\nHost: t\r\n\r\n").status == 414


def test_limit_request_line_rejected_while_trickling():
    conn = HTTPConnection(limits=Limits(limit_request_line=100))
    conn.receive_data(b"GET /", 1.0)
    for i in range(200):
        conn.receive_data(b"a", 1.0 + i)
        ev = conn.next_event()
        if ev is not NEED_DATA:
            break
    assert isinstance(ev, ProtocolError) and ev.status == 414
    assert i < 100


def test_limit_request_field_size_431():
    err = one(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"v" * 8190 + b"\r\n\r\n")
    assert err.status == 431 and "LimitRequestFieldSize" in err.reason


def test_field_size_exact_boundary():
    value = b"v" * (100 - len("X-Big: "))
    ok = one(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + value + b"\r\n\r\n",
             limits=Limits(limit_request_field_size=100))
    assert isinstance(ok, Request)
    err = one(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + value + b"v\r\n\r\n",
              limits=Limits(limit_request_field_size=100))
    assert err.status == 431


def test_endless_header_rejected_before_buffered_whole():
    conn = HTTPConnection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: t\r\nX-Endless: ", 1.0)
    fed = 0
    while fed < 10_000_000:
        conn.receive_data(b"x" * 1000, 2.0)
        fed += 1000
        ev = conn.next_event()
        if ev is not NEED_DATA:
            break
    assert isinstance(ev, ProtocolError) and ev.status == 431
    assert fed <= 8190 + 256 + 1000


def test_limit_request_fields_431():
    hdrs = b"".join(b"X-%d: v\r\n" % i for i in range(100))
    assert isinstance(one(b"GET / HTTP/1.1\r\nHost: t\r\n" + hdrs[: -len(b"X-99: v\r\n")] + b"\r\n"), Request)
    err = one(b"GET / HTTP/1.1\r\nHost: t\r\n" + hdrs + b"\r\n")
    assert err.status == 431 and "LimitRequestFields 100" in err.reason


def test_limit_request_fields_zero_is_unlimited():
    hdrs = b"".join(b"X-%d: v\r\n" % i for i in range(300))
    assert isinstance(one(b"GET / HTTP/1.1\r\nHost: t\r\n" + hdrs + b"\r\n",
                          limits=Limits(limit_request_fields=0)), Request)


def test_declared_content_length_over_limit_413_at_headers():
    conn = HTTPConnection(limits=Limits(limit_request_body=10))
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n", 1.0)
    err = conn.next_event()  # no body byte sent yet
    assert err.status == 413 and "LimitRequestBody 10" in err.reason


def test_body_at_limit_ok():
    req = one(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789",
              limits=Limits(limit_request_body=10))
    assert req.body == b"0123456789"


def test_chunked_body_over_limit_413():
    data = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + b"8\r\n12345678\r\n" * 3
    err = one(data, limits=Limits(limit_request_body=20))
    assert err.status == 413


def test_after_error_further_data_ignored_then_closed():
    conn = HTTPConnection()
    conn.receive_data(b"\x00\x01\x02 garbage\r\n\r\n", 1.0)
    ev = conn.next_event()
    assert isinstance(ev, ProtocolError) and ev.status == 400
    before = conn.bytes_received_total
    conn.receive_data(GET, 2.0)
    assert conn.bytes_received_total == before
    assert conn.next_event() is CLOSED


def test_error_after_good_pipelined_requests_comes_in_order():
    evs = feed(GET + b"GET /\x01 HTTP/1.1\r\n\r\n")
    assert isinstance(evs[0], Request)
    assert isinstance(evs[1], ProtocolError) and evs[1].status == 400
    assert evs[2] is CLOSED


# --- hostile inputs -------------------------------------------------------------------------------------

HOSTILE = [
    ("garbage", b"\x00\xff\xfe\r\n\r\n", 400),
    ("tls client hello", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400),
    ("unknown method", b"FOO / HTTP/1.1\r\nHost: t\r\n\r\n", 501),
    ("lowercase method", b"get / HTTP/1.1\r\nHost: t\r\n\r\n", 501),
    ("bad version text", b"GET / HTTP/1.x\r\nHost: t\r\n\r\n", 400),
    ("version 1.2", b"GET / HTTP/1.2\r\nHost: t\r\n\r\n", 505),
    ("version 2.0", b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    ("version 0.9 line", b"GET / HTTP/0.9\r\n\r\n", 400),
    ("http/0.9 simple request", b"GET /\r\n\r\n", 400),
    ("h2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    ("not http", b"HELLO\r\n\r\n", 400),
    ("missing target", b"GET HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("space in target", b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("control char in target", b"GET /\x7f HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("no host on 1.1", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("bad header name char", b"GET / HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n", 400),
    ("header without colon", b"GET / HTTP/1.1\r\nHost: t\r\nNoColon\r\n\r\n", 400),
    ("ctl in header value", b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x01b\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n", 400),
    ("bare LF", b"GET / HTTP/1.1\nHost: t\n\n", 400),
    ("CL and TE", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("negative CL", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400),
    ("overflowing CL", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
    ("non-numeric CL", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1e3\r\n\r\n", 400),
    ("conflicting CLs", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    ("unknown TE", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    ("bad chunk size", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", 400),
    ("chunk data overrun", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", 400),
    ("huge chunk size", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n", 400),
    ("chunk bigger than body limit", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n200000\r\n" + b"a" * 1_100_000, 413),
    ("huge CL", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n", 413),
    ("long url", b"GET /" + b"u" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    ("long header", b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"h" * 9000 + b"\r\n\r\n", 431),
    ("many headers", b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
    ("long header name", b"GET / HTTP/1.1\r\nHost: t\r\n" + b"N" * 9000 + b": v\r\n\r\n", 431),
]


@pytest.mark.parametrize("name,data,status", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_inputs_whole(name, data, status):
    conn = HTTPConnection()
    conn.receive_data(data, 1.0)
    conn.receive_data(b"", 2.0)  # EOF after: must not change the verdict
    ev = conn.next_event()
    assert isinstance(ev, ProtocolError), ev
    assert ev.status == status, ev.reason
    assert ev.reason
    assert conn.next_event() is CLOSED


@pytest.mark.parametrize("name,data,status", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_inputs_byte_by_byte(name, data, status):
    conn = HTTPConnection()
    ev = NEED_DATA
    for i in range(len(data)):
        conn.receive_data(data[i:i + 1], 1.0)
        ev = conn.next_event()
        if ev is not NEED_DATA:
            break
    if ev is NEED_DATA:
        conn.receive_data(b"", 2.0)
        ev = conn.next_event()
    assert isinstance(ev, ProtocolError), ev
    # byte by byte, an unknown method is seen at its first wrong byte: still 501 (token chars)
    assert ev.status == status, ev.reason


def test_random_garbage_never_raises():
    import random
    rnd = random.Random(1234)
    alphabet = b"GET POST/ HTTP/1.1\r\n:Host-Length0123456789chunked\x00\xff "
    for _ in range(500):
        data = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(1, 200)))
        conn = HTTPConnection(limits=Limits(limit_request_line=60, limit_request_field_size=40))
        pos = 0
        while pos < len(data):
            step = rnd.randint(1, 17)
            conn.receive_data(data[pos:pos + step], 1.0)
            pos += step
            for ev in events(conn):
                assert ev is NEED_DATA or ev is CLOSED or isinstance(ev, (Request, ProtocolError))
        conn.receive_data(b"", 2.0)
        events(conn)


def test_upgrade_is_ignored_and_answered_normally():
    data = (b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n")
    evs = feed(data)
    assert [e.path for e in evs[:-1]] == ["/ws", "/next"]


def test_upgrade_with_body_reads_the_body():
    data = (b"POST /u HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: h2c\r\nContent-Length: 4\r\n\r\nbody"
            b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n")
    for size in (len(data), 1, 5):
        conn = HTTPConnection()
        got = []
        for i in range(0, len(data), size):
            conn.receive_data(data[i:i + size], 1.0)
            got += [e for e in events(conn) if e is not NEED_DATA]
        assert [(e.path, e.body) for e in got] == [("/u", b"body"), ("/next", b"")], size


def test_upgrade_with_chunked_body():
    data = (b"POST /u HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n" + GET)
    evs = feed(data)
    assert [(e.path, e.body) for e in evs[:-1]] == [("/u", b"abc"), ("/", b"")]


# --- EOF -------------------------------------------------------------------------------------------------


def test_eof_idle_is_closed():
    conn = HTTPConnection()
    conn.receive_data(b"", 1.0)
    assert conn.next_event() is CLOSED
    assert conn.next_event() is CLOSED


def test_eof_after_blank_lines_is_closed():
    assert feed(b"\r\n")[-1] is NEED_DATA
    conn = HTTPConnection()
    conn.receive_data(b"\r\n\r\n", 1.0)
    conn.receive_data(b"", 1.0)
    assert conn.next_event() is CLOSED


@pytest.mark.parametrize("partial", [b"G", b"GET / HTTP/1.1\r\nHost: t\r\n",
                                     b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nab"])
def test_eof_mid_request_is_400(partial):
    conn = HTTPConnection()
    conn.receive_data(partial, 1.0)
    conn.receive_data(b"", 1.0)
    ev = conn.next_event()
    assert isinstance(ev, ProtocolError) and ev.status == 400


def test_eof_after_pipelined_requests_answers_them_first():
    conn = HTTPConnection()
    conn.receive_data(GET + GET, 1.0)
    conn.receive_data(b"", 1.0)
    evs = events(conn)
    assert [type(e) for e in evs[:2]] == [Request, Request] and evs[2] is CLOSED


def test_counters():
    conn = HTTPConnection()
    conn.receive_data(GET, 1.0)
    conn.receive_data(GET, 1.0)
    assert conn.bytes_received_total == 2 * len(GET)
    for ev in events(conn)[:-1]:
        conn.send_response(ev, Response(200))
    assert conn.requests_completed == 2


# --- timeouts (mod_reqtimeout) --------------------------------------------------------------------------


def test_idle_deadline_is_timeout_after_last_activity():
    conn = HTTPConnection(timeout=60, now=100.0)
    assert conn.read_deadline() == (160.0, None)
    conn.receive_data(GET, 110.0)
    conn.next_event()
    assert conn.phase is Phase.IDLE
    assert conn.read_deadline() == (170.0, None)


def test_header_deadline_initial_and_min_rate_extension_and_cap():
    rt = RequestReadTimeout()  # header=20-40,MinRate=500
    conn = HTTPConnection(read_timeout=rt, timeout=1000, now=0.0)
    conn.receive_data(b"GET / HTTP/1.1\r\n", 100.0)  # header phase starts at 100
    n = len(b"GET / HTTP/1.1\r\n")
    assert conn.phase is Phase.HEADER
    assert conn.read_deadline() == (pytest.approx(100 + 20 + n / 500), 408)
    conn.receive_data(b"X: " + b"a" * 997 + b"\r\n", 101.0)  # 1002 more bytes: +2.004 s
    deadline, status = conn.read_deadline()
    assert deadline == pytest.approx(100 + 20 + (n + 1002) / 500) and status == 408
    for i in range(12):  # ~12 KB more: would be +24 s, capped at start + 40
        conn.receive_data(b"Y%d: " % i + b"b" * 1000 + b"\r\n", 102.0 + i)
    assert conn.read_deadline() == (pytest.approx(140.0), 408)


def test_header_deadline_never_after_timeout_since_last_activity():
    conn = HTTPConnection(timeout=5, now=0.0)
    conn.receive_data(b"GET /", 10.0)
    assert conn.read_deadline() == (15.0, 408)


def test_body_deadline():
    rt = RequestReadTimeout.parse("header=20-40,MinRate=500 body=10,MinRate=1000")
    conn = HTTPConnection(read_timeout=rt, timeout=1000)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n", 50.0)
    assert conn.phase is Phase.BODY
    assert conn.read_deadline() == (pytest.approx(60.0), 408)
    conn.receive_data(b"x" * 2000, 55.0)
    assert conn.read_deadline() == (pytest.approx(62.0), 408)  # no max: keeps extending
    conn.receive_data(b"x" * 3000, 56.0)
    assert isinstance(conn.next_event(), Request)
    assert conn.read_deadline() == (1056.0, None)


def test_phase_without_min_rate_is_fixed():
    rt = RequestReadTimeout.parse("header=10")
    conn = HTTPConnection(read_timeout=rt, timeout=1000)
    conn.receive_data(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 50, 3.0)
    assert conn.read_deadline() == (13.0, 408)


def test_disabled_phase_falls_back_to_timeout():
    rt = RequestReadTimeout.parse("header=0 body=0")
    conn = HTTPConnection(read_timeout=rt, timeout=60)
    conn.receive_data(b"GET / HT", 7.0)
    assert conn.read_deadline() == (67.0, 408)


# --- RequestReadTimeout.parse ---------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("header=20-40,MinRate=500 body=20,MinRate=500", RequestReadTimeout()),
    ("header=10", RequestReadTimeout(header_timeout=10, header_max=None, header_min_rate=0)),
    ("body=30", RequestReadTimeout(body_timeout=30, body_max=None, body_min_rate=0)),
    ("header=0", RequestReadTimeout(header_timeout=0, header_max=None, header_min_rate=0)),
    ("HEADER=5-10,minrate=100", RequestReadTimeout(header_timeout=5, header_max=10, header_min_rate=100)),
    ("body=0-0,MinRate=1", RequestReadTimeout(body_timeout=0, body_max=None, body_min_rate=1)),
    ("  header=1,MinRate=2   body=3-4,MinRate=5 ",
     RequestReadTimeout(1, None, 2, 3, 4, 5)),
])
def test_read_timeout_parse_good(text, expected):
    assert RequestReadTimeout.parse(text) == expected


@pytest.mark.parametrize("text,fragment", [
    ("", "empty"),
    ("header", "key=value"),
    ("head=10", "unknown parameter"),
    ("header=abc", "whole number"),
    ("header=-5", "MinRate"),
    ("header=-5,MinRate=1", "whole number"),
    ("header=1.5", "whole number"),
    ("header=10-20", "MinRate"),
    ("header=20-10,MinRate=500", "larger than initial"),
    ("header=20-20,MinRate=500", "larger than initial"),
    ("header=20,MinRate=0", "larger than 0"),
    ("header=20,MinRate=x", "MinRate"),
    ("header=20,Foo=1", "MinRate"),
    ("header=1 header=2", "twice"),
    ("handshake=5", "handshake"),
])
def test_read_timeout_parse_bad(text, fragment):
    with pytest.raises(ValueError) as info:
        RequestReadTimeout.parse(text)
    assert fragment.lower() in str(info.value).lower()


def test_expect_100_continue_interim_response():
    from mpmcore.http.protocol import NEED_DATA, HTTPConnection, Request
    c = HTTPConnection()
    c.receive_data(b"POST /sleep?ms=0 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", 0.0)
    assert c.take_interim() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert c.take_interim() == b""  # once
    assert c.next_event() is NEED_DATA
    c.receive_data(b"hello", 0.1)
    req = c.next_event()
    assert isinstance(req, Request) and req.body == b"hello"
    # the body came with the headers: nothing to say; HTTP/1.0 and bodiless requests: never
    for raw in (b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
                b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n"):
        c = HTTPConnection()
        c.receive_data(raw, 0.0)
        assert c.take_interim() == b"", raw
