"""One HTTP/1.1 connection state machine, sans-IO.

Bytes go in (:meth:`HTTPConnection.receive_data`), events come out (:meth:`HTTPConnection.next_event`),
responses are serialised to bytes (:meth:`HTTPConnection.send_response`). No sockets, no threads and
no clock reads except one ``time.time()`` per second for the Date header: callers pass ``now`` (a
``time.monotonic()`` value). The three MPMs share this module, so a fix to HTTP handling is made once.

Parsing is done by httptools (llhttp). Its callbacks are where Apache's request limits are enforced,
so an oversized request is refused while it arrives, not after it has been buffered whole.

States of the request side (h11 habit: explicit, every transition in one place)::

    IDLE --first byte--> HEADER --headers complete--> BODY --message complete--> IDLE
      |                    |                            |
      +--EOF--> CLOSED     +--bad input / limit / EOF---+--> ERROR (one ProtocolError event, then CLOSED)

    DONE: the last request said it was the last (Connection: close, HTTP/1.0); more input is ignored.

Deliberate choices (each also commented where it is made):

- LimitRequestFieldSize and LimitRequestFields answer 431 (RFC 6585), where Apache answers 400.
- MaxKeepAliveRequests counts like Apache/2.4.71 measured side by side: with a limit of N, responses
  1..N are kept alive (``Keep-Alive: timeout=5, max=N`` then ``max=N-1`` ...), response N+1 closes.
- ``Keep-Alive:`` and ``Connection: Keep-Alive`` are sent, like Apache, only when the client sent a
  ``keep-alive`` connection token; a plain HTTP/1.1 keep-alive response carries neither.
- An HTTP/1.1 request without Host is a 400 (Apache does the same).
- HTTP/0.9 is a 400 (as Apache); an HTTP/2 preface or any other well-formed version than 1.0 and 1.1
  is a 505 (Apache answers HTTP/2.0 and 1.2 as if they were 1.1).
- Bare LF line endings are refused (llhttp's strict default).
"""

from __future__ import annotations

import enum
import html
import re
import time
from collections import deque
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from types import SimpleNamespace
from typing import Final, NoReturn

import httptools

__all__ = [
    "CLOSED",
    "NEED_DATA",
    "HTTPConnection",
    "Limits",
    "Phase",
    "ProtocolError",
    "Request",
    "RequestReadTimeout",
    "Response",
    "Wait",
]


class Wait(enum.Enum):
    """What ``next_event`` returns when it has no request or error to give."""

    NEED_DATA = "need_data"  # feed more bytes
    CLOSED = "closed"  # peer closed (or the connection is finished): stop reading


NEED_DATA: Final = Wait.NEED_DATA
CLOSED: Final = Wait.CLOSED


class Phase(enum.Enum):
    """Where a connection is in reading a request (finished or failed connections are IDLE)."""

    IDLE = "idle"
    HEADER = "header"
    BODY = "body"

# ---------------------------------------------------------------------------------------------------
# Named constants

# Slack above the configured line limits before the in-flight guard refuses a still-growing line.
# The exact per-field check happens when a field completes; the guard only bounds what httptools
# buffers for a line that never ends (slowloris with one endless header).
LINE_GUARD_SLACK = 256

# Bytes of unparsed input held while max_pipelined complete requests wait to be answered. A client
# that keeps pipelining past that is refused rather than buffered without bound.
MAX_PIPELINE_BACKLOG = 1 << 20

# How many bytes of a request's start are kept to tell an unknown method (501) from garbage (400).
METHOD_PROBE_BYTES = 32

# HTTP/1.1 token characters (RFC 9110 5.6.2): a request that starts with a run of them followed by a
# space is an unknown method (501), anything else is not HTTP at all (400).
_TOKEN_RUN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]*")

# Apache closes the connection after these statuses whatever keep-alive says
# (ap_status_drops_connection in httpd's include/httpd.h).
_DROPS_CONNECTION = frozenset({400, 408, 411, 413, 414, 417, 500, 501, 503})

# Response headers this module owns; a handler's copies are dropped so they cannot contradict ours.
_MANAGED_HEADERS = frozenset(
    {"content-length", "connection", "keep-alive", "transfer-encoding", "date", "server"}
)

# Reason phrases: Python's table with Apache's wording where Python's has drifted between versions.
_REASONS: dict[int, str] = {s.value: s.phrase for s in HTTPStatus}
_REASONS.update({413: "Request Entity Too Large", 414: "Request-URI Too Long"})

# Apache's explanatory sentence on its error pages.
_ERROR_TEXT = {
    400: "Your browser sent a request that this server could not understand.",
    408: "Server timeout waiting for the HTTP request from the client.",
    413: "The requested resource does not allow request data with this method, "
    "or the amount of data provided in the request exceeds the capacity limit.",
    414: "The requested URL's length exceeds the capacity limit for this server.",
    431: "Your browser sent a request with header fields larger than this server allows.",
    500: "The server encountered an internal error and was unable to complete your request.",
    501: "The request method is not supported by this server.",
    505: "This server supports HTTP/1.0 and HTTP/1.1 only.",
}

# Traffic pattern names are copied into a fixed-size scoreboard field.
TRAFFIC_PATTERN_MAX = 23


# ---------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class Limits:
    """Per-connection limits. Apache directive names in the comments."""

    limit_request_line: int = 8190  # LimitRequestLine -> 414
    # LimitRequestFieldSize -> 431. Apache answers 400 here; 431 (RFC 6585) tells the client which
    # part of its request was too big, which is what a lab wants to see.
    limit_request_field_size: int = 8190
    limit_request_fields: int = 100  # LimitRequestFields -> 431; 0 = unlimited (as Apache)
    # LimitRequestBody -> 413; 0 = unlimited (as Apache). mpmlab's default is 1 MiB, Apache's 1 GiB:
    # we buffer bodies in memory.
    limit_request_body: int = 1 << 20
    keep_alive: bool = True  # KeepAlive
    max_keep_alive_requests: int = 100  # MaxKeepAliveRequests, 0 = unlimited
    keep_alive_timeout: float = 5.0  # KeepAliveTimeout (only echoed in the Keep-Alive header here)
    max_pipelined: int = 64  # complete requests parsed ahead before input is held back


@dataclass
class RequestReadTimeout:
    """mod_reqtimeout's RequestReadTimeout. A timeout of 0 disables that phase."""

    header_timeout: float = 20
    header_max: float | None = 40
    header_min_rate: int = 500
    body_timeout: float = 20
    body_max: float | None = None
    body_min_rate: int = 500

    @classmethod
    def parse(cls, text: str) -> RequestReadTimeout:
        """Parse Apache's syntax: ``header=20-40,MinRate=500 body=20,MinRate=500``.

        As mod_reqtimeout: a phase that is named is reset entirely (``header=10`` means no max and
        no MinRate), a phase that is not named keeps its default, a range needs MinRate, the max
        must exceed the initial timeout, MinRate must be > 0, all numbers are whole seconds/bytes.
        """
        result = cls()
        if not isinstance(text, str) or not text.strip():
            raise ValueError("RequestReadTimeout: empty value; expected e.g. 'header=20-40,MinRate=500'")
        seen: set[str] = set()
        for word in text.split():
            key, sep, val = word.partition("=")
            if not sep:
                raise ValueError(
                    f"RequestReadTimeout: {word!r}: parameter must be in the form 'key=value'"
                )
            phase = key.lower()
            if phase == "handshake":
                raise ValueError(
                    "RequestReadTimeout: handshake= is not supported by mpmlab "
                    "(only header= and body=)"
                )
            if phase not in ("header", "body"):
                raise ValueError(
                    f"RequestReadTimeout: unknown parameter {key!r} (expected header= or body=)"
                )
            if phase in seen:
                raise ValueError(f"RequestReadTimeout: {phase}= given twice")
            seen.add(phase)
            initial, maximum, rate = cls._parse_phase(phase, val)
            setattr(result, f"{phase}_timeout", initial)
            setattr(result, f"{phase}_max", maximum)
            setattr(result, f"{phase}_min_rate", rate)
        return result

    @staticmethod
    def _parse_phase(phase: str, val: str) -> tuple[float, float | None, int]:
        def number(s: str, what: str) -> int:
            s = s.strip()
            if not s.isdigit():
                raise ValueError(
                    f"RequestReadTimeout: {phase}={val!r}: {what} must be a whole number >= 0, got {s!r}"
                )
            return int(s)

        lowered = val.lower()
        idx = lowered.find(",minrate=")
        if idx >= 0:
            timing, rate_s = val[:idx], val[idx + len(",minrate=") :]
            rate = number(rate_s, "MinRate")
            if rate == 0:
                raise ValueError(f"RequestReadTimeout: {phase}: MinRate must be larger than 0")
        else:
            if "," in val:
                raise ValueError(
                    f"RequestReadTimeout: {phase}={val!r}: the only option after ',' is MinRate=N"
                )
            timing, rate = val, 0
        first, dash, last = timing.partition("-")
        if dash and not rate:
            raise ValueError(
                f"RequestReadTimeout: {phase}={val!r}: must set MinRate option if using timeout range"
            )
        initial = number(first, "timeout")
        maximum: int | None = number(last, "maximum timeout") if dash else None
        if maximum == 0:
            maximum = None  # Apache: a max of 0 means no max
        if maximum is not None and initial >= maximum:
            raise ValueError(
                f"RequestReadTimeout: {phase}={val!r}: maximum timeout must be larger than initial timeout"
            )
        return float(initial), (float(maximum) if maximum is not None else None), rate


# ---------------------------------------------------------------------------------------------------
# Events and responses


def _connection_tokens(value: str | None) -> set[str]:
    if not value:
        return set()
    return {t.strip().lower() for t in value.split(",")}


@dataclass(slots=True)
class Request:
    method: str
    target: str
    path: str = ""  # raw (not percent-decoded) path; derived from target when left empty
    query: str = ""  # after '?', without it
    http_version: str = "1.1"  # "1.1" or "1.0"
    headers: list[tuple[str, str]] = field(default_factory=list)  # names lower-cased, latin-1
    body: bytes = b""
    # HTTP/1.1: yes unless Connection: close; HTTP/1.0: only with Connection: keep-alive.
    # Computed from the headers when not given.
    wants_keep_alive: bool | None = None

    def __post_init__(self) -> None:
        if not self.path:
            target = self.target
            if target[:1] != "/" and "://" in target:  # absolute-form: keep the path part
                rest = target.split("://", 1)[1]
                slash = rest.find("/")
                target = rest[slash:] if slash >= 0 else "/"
            path, _, query = target.partition("?")
            self.path = path
            if not self.query:
                self.query = query.partition("#")[0]
        if self.wants_keep_alive is None:
            tokens = _connection_tokens(self.header("connection"))
            if self.http_version == "1.1":
                self.wants_keep_alive = "close" not in tokens
            else:
                self.wants_keep_alive = "keep-alive" in tokens and "close" not in tokens

    def header(self, name: str) -> str | None:
        """The value of header `name` (any case); repeated fields joined with ', '."""
        name = name.lower()
        found = [v for k, v in self.headers if k == name]
        if not found:
            return None
        return found[0] if len(found) == 1 else ", ".join(found)

    @property
    def request_line(self) -> str:
        return f"{self.method} {self.target} HTTP/{self.http_version}"

    @property
    def host(self) -> str | None:
        return self.header("host")

    @property
    def traffic_pattern(self) -> str | None:
        value = self.header("x-traffic-pattern")
        return value[:TRAFFIC_PATTERN_MAX] if value is not None else None


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | memoryview = b""
    close: bool = False  # the handler asks to close the connection after this response


@dataclass(slots=True)
class ProtocolError:
    """An event, not an exception: answer `status` (send_error) and close."""

    status: int  # 400, 408, 413, 414, 431, 501, 505 (500 only on an mpmlab bug)
    reason: str


class _Abort(Exception):
    """Raised inside a parser callback to stop llhttp; the ProtocolError is in conn._pending_error."""


# ---------------------------------------------------------------------------------------------------
# Date header: one time.time() per second of `now`, shared by every connection in the process.

_date_cache: tuple[int, str] = (-1, "")


def _http_date(now: float) -> str:
    global _date_cache
    sec = int(now)
    cached = _date_cache
    if cached[0] != sec:
        cached = (sec, formatdate(time.time(), usegmt=True))
        _date_cache = cached  # tuple swap: atomic, safe between threads
    return cached[1]


# ---------------------------------------------------------------------------------------------------
# The connection

class _State(enum.Enum):
    IDLE = "idle"
    HEADER = "header"
    BODY = "body"
    DONE = "done"  # the last request was announced (Connection: close, or an upgrade)
    ERROR = "error"
    CLOSED = "closed"
    # llhttp refused the method at its first unknown byte; more bytes are read (up to
    # METHOD_PROBE_BYTES) to tell an unknown method (501) from garbage (400). Counts as the header phase.
    PROBING = "probing"


_IDLE, _HEADER, _BODY, _DONE, _ERROR, _CLOSED, _PROBING = (
    _State.IDLE, _State.HEADER, _State.BODY, _State.DONE, _State.ERROR, _State.CLOSED, _State.PROBING)
_PHASES = {_HEADER: Phase.HEADER, _PROBING: Phase.HEADER, _BODY: Phase.BODY}


class HTTPConnection:
    """The server side of one HTTP/1.1 connection."""

    _continue_pending: bool  # set by _reset_message, which __init__ calls

    def __init__(
        self,
        limits: Limits | None = None,
        read_timeout: RequestReadTimeout | None = None,
        timeout: float = 60.0,  # Apache's Timeout
        server: str = "mpmlab",
        now: float = 0.0,
    ) -> None:
        self.limits = limits if limits is not None else Limits()
        self.read_timeout = read_timeout if read_timeout is not None else RequestReadTimeout()
        self.timeout = timeout
        self.server = server
        self.keep_alive = True
        self.requests_completed = 0
        self.bytes_received_total = 0

        self._events: deque[Request | ProtocolError | Wait] = deque()
        self._state = _IDLE
        self._pending_error: ProtocolError | None = None
        self._backlog = bytearray()  # input held while max_pipelined requests wait
        self._eof_pending = False
        self._last_activity = now
        self._now = now
        self._phase_start = now
        self._phase_bytes = 0
        self._line_len = 0  # bytes of the still-unfinished line in the header section
        self._began_in_feed = False
        self._completed_in_feed = False
        self._head = b""  # first bytes of the current request (for 501 vs 400)
        self._head_known = True
        self._replaying = False  # feeding a synthetic head after an ignored Upgrade
        self._reset_message()
        self._parser = self._new_parser()

    # -- public API ---------------------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        """IDLE, HEADER or BODY (finished or failed connections report IDLE)."""
        return _PHASES.get(self._state, Phase.IDLE)

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes from the peer; b"" means EOF."""
        if self._state in (_ERROR, _CLOSED) or self._eof_pending:
            return  # after an error or EOF, further data is ignored
        self._last_activity = now
        self._now = now
        if not data:
            if self._backlog:
                self._eof_pending = True
            else:
                self._eof()
            return
        self.bytes_received_total += len(data)
        if self._state == _DONE:
            return  # the last request was announced; Apache ignores what follows too
        if self._state == _PROBING:
            self._head += data[: METHOD_PROBE_BYTES - len(self._head)]
            self._classify_method()
            return
        if self._backlog or len(self._events) >= self.limits.max_pipelined:
            self._backlog += data
            if len(self._backlog) > MAX_PIPELINE_BACKLOG:
                self._backlog.clear()
                self._fail(
                    400,
                    f"too much pipelined input: {self.limits.max_pipelined} requests waiting and "
                    f"more than {MAX_PIPELINE_BACKLOG} bytes behind them",
                )
            return
        self._feed(data)

    def next_event(self) -> Request | ProtocolError | Wait:
        """The next Request or ProtocolError in arrival order, else NEED_DATA or CLOSED."""
        events = self._events
        if not events and self._backlog:
            self._drain_backlog()
        if events:
            return events.popleft()
        if self._state in (_ERROR, _CLOSED) or (self._state == _DONE and self._eof_pending):
            return CLOSED
        return NEED_DATA

    def read_deadline(self) -> tuple[float, int | None]:
        """Absolute time by which more data must arrive, and the status to answer if it does not."""
        idle_deadline = self._last_activity + self.timeout
        st = self._state
        rt = self.read_timeout
        if st in (_HEADER, _PROBING):
            initial, maximum, rate = rt.header_timeout, rt.header_max, rt.header_min_rate
        elif st == _BODY:
            initial, maximum, rate = rt.body_timeout, rt.body_max, rt.body_min_rate
        else:
            return idle_deadline, None
        if initial <= 0:  # phase disabled in mod_reqtimeout: only Timeout applies
            return idle_deadline, 408
        start = self._phase_start
        deadline = start + initial
        if rate:
            # mod_reqtimeout: every byte read pushes the deadline back by 1/MinRate seconds...
            deadline += self._phase_bytes / rate
        if maximum is not None:
            # ...but never past the phase's maximum.
            deadline = min(deadline, start + maximum)
        return min(deadline, idle_deadline), 408

    def send_response(self, request: Request, response: Response) -> bytes:
        head, body = self.send_response_parts(request, response)
        return head + body if body else head

    def send_response_parts(
        self, request: Request, response: Response
    ) -> tuple[bytes, bytes | memoryview]:
        """As send_response, but the body is returned apart so a big memoryview is not copied."""
        limits = self.limits
        status = response.status
        max_ka = limits.max_keep_alive_requests
        done = self.requests_completed
        keep = (
            limits.keep_alive
            and request.wants_keep_alive
            and not response.close
            # Apache: left = MaxKeepAliveRequests - keep-alives already granted; keep alive while > 0
            and (max_ka == 0 or done < max_ka)
            and status not in _DROPS_CONNECTION
        )
        self.keep_alive = bool(keep)
        self.requests_completed = done + 1

        parts = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
            f"Date: {_http_date(self._now)}\r\nServer: {self.server}\r\n"
        ]
        body = response.body
        if status < 200 or status in (204, 304):
            body = b""
        else:
            parts.append(f"Content-Length: {len(body)}\r\n")
            if request.method == "HEAD":
                body = b""
        if keep:
            conn = request.header("connection")
            if conn and "keep-alive" in _connection_tokens(conn):
                # Apache echoes Keep-Alive only to clients that asked with a keep-alive token.
                if max_ka:
                    parts.append(
                        f"Keep-Alive: timeout={int(limits.keep_alive_timeout)}, max={max_ka - done}\r\n"
                    )
                else:
                    parts.append(f"Keep-Alive: timeout={int(limits.keep_alive_timeout)}\r\n")
                parts.append("Connection: Keep-Alive\r\n")
        else:
            parts.append("Connection: close\r\n")
        for name, value in response.headers:
            if name.lower() not in _MANAGED_HEADERS:
                parts.append(f"{name}: {value}\r\n")
        parts.append("\r\n")
        return "".join(parts).encode("latin-1"), body

    def take_interim(self) -> bytes:
        """Bytes to send before the final response: ``100 Continue`` once, for a request with
        ``Expect: 100-continue`` whose body is still to come; else b"". Call when next_event()
        says NEED_DATA: every earlier (pipelined) request has been answered by then, so the
        interim response cannot overtake their final ones."""
        if self._continue_pending:
            self._continue_pending = False
            if self._state == _BODY:
                return b"HTTP/1.1 100 Continue\r\n\r\n"
        return b""

    def send_error(self, err: ProtocolError) -> bytes:
        """Apache-like error page for a ProtocolError; always Connection: close."""
        self.keep_alive = False
        status = err.status
        reason = _REASONS.get(status, "Error")
        body = (
            '<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n'
            f"<title>{status} {reason}</title>\n</head><body>\n<h1>{reason}</h1>\n"
            f"<p>{_ERROR_TEXT.get(status, '')}<br />\n{html.escape(err.reason)}</p>\n"
            "</body></html>\n"
        ).encode("latin-1", "replace")
        head = (
            f"HTTP/1.1 {status} {reason}\r\nDate: {_http_date(self._now)}\r\n"
            f"Server: {self.server}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
            "Content-Type: text/html; charset=iso-8859-1\r\n\r\n"
        ).encode("latin-1")
        return head + body

    # -- feeding -------------------------------------------------------------------------------------

    def _new_parser(self) -> httptools.HttpRequestParser:
        # httptools looks the callbacks up once; a namespace keeps them off the public surface.
        return httptools.HttpRequestParser(
            SimpleNamespace(
                on_message_begin=self._on_message_begin,
                on_url=self._on_url,
                on_header=self._on_header,
                on_headers_complete=self._on_headers_complete,
                on_body=self._on_body,
                on_message_complete=self._on_message_complete,
            )
        )

    def _feed(self, data: bytes) -> None:
        state_before = self._state
        if state_before == _IDLE:
            self._head = data.lstrip(b"\r\n")[:METHOD_PROBE_BYTES]
            self._head_known = True
        elif state_before == _HEADER and len(self._head) < METHOD_PROBE_BYTES:
            self._head += data[: METHOD_PROBE_BYTES - len(self._head)]
        self._began_in_feed = self._completed_in_feed = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._after_upgrade(data, exc.args[0])
            return
        except httptools.HttpParserError as exc:
            self._parser_failed(exc, data)
            return
        except _Abort:  # pragma: no cover - httptools wraps callback errors, kept for safety
            self._fail_with(self._pending_error)
            return

        st = self._state
        if st == _HEADER:
            if self._began_in_feed:
                self._phase_bytes = len(data)
            else:
                self._phase_bytes += len(data)
            self._guard_line(data)
        elif st == _BODY:
            self._phase_bytes = self._body_len

    def _guard_line(self, data: bytes) -> None:
        """Bound the unfinished header line that httptools buffers until the field completes."""
        nl = data.rfind(b"\n")
        if self._completed_in_feed:
            # Where the new request starts inside this chunk is unknown: undercount (safe, the
            # exact check runs when the field completes) rather than blame the previous body.
            self._line_len = 0
        elif nl < 0 and not self._began_in_feed:
            self._line_len += len(data)
        else:
            self._line_len = len(data) - nl - 1
        limits = self.limits
        bound = max(limits.limit_request_line, limits.limit_request_field_size) + LINE_GUARD_SLACK
        if self._line_len > bound:
            self._fail(
                431,
                f"request header field too large (LimitRequestFieldSize "
                f"{limits.limit_request_field_size}): a line is still growing past {bound} bytes",
            )

    def _drain_backlog(self) -> None:
        data = bytes(self._backlog)
        self._backlog.clear()
        if self._state in (_IDLE, _HEADER, _BODY):
            self._feed(data)
        if self._eof_pending and self._state not in (_ERROR, _CLOSED):
            self._eof()

    def _after_upgrade(self, data: bytes, offset: int) -> None:
        # llhttp stops at an Upgrade (or CONNECT) and skips its body. mpmlab ignores Upgrade: we answer
        # the request as plain HTTP/1.1, so parsing goes on with a fresh parser after it. If the
        # request declared a body, a synthetic head carrying only its framing is replayed first so
        # the body is read (and limited) exactly as for any request.
        self._parser = self._new_parser()
        rest = data[offset:]
        if self._state == _BODY:  # body still owed by the upgrade request
            if self._chunked:
                framing = b"Transfer-Encoding: chunked\r\n"
            else:
                framing = b"Content-Length: %d\r\n" % self._content_length
            self._replaying = True
            self._parser.feed_data(b"POST / HTTP/1.1\r\n" + framing + b"\r\n")
        if rest:
            self._feed(rest)

    def _eof(self) -> None:
        if self._state in (_HEADER, _BODY, _PROBING):
            self._fail(400, "connection closed by the client in the middle of a request")
            return
        self._state = _CLOSED
        self._events.append(CLOSED)

    # -- errors --------------------------------------------------------------------------------------

    def _fail(self, status: int, reason: str) -> None:
        self._fail_with(ProtocolError(status, reason))

    def _fail_with(self, err: ProtocolError | None) -> None:
        if err is None:  # pragma: no cover - defensive
            err = ProtocolError(500, "internal error in the request parser")
        self._state = _ERROR
        self._backlog.clear()
        self._events.append(err)

    def _parser_failed(self, exc: Exception, data: bytes) -> None:
        if self._pending_error is not None:
            self._fail_with(self._pending_error)
            return
        msg = str(exc)
        if isinstance(exc, httptools.HttpParserCallbackError):
            # One of our callbacks raised something other than _Abort: an mpmlab bug, not the client's.
            cause = exc.__context__
            self._fail(500, f"internal error in the request parser: {cause!r}")
        elif isinstance(exc, httptools.HttpParserInvalidMethodError):
            if not self._head_known or self._completed_in_feed:
                # The refused request starts somewhere inside a pipelined chunk; where is unknown.
                self._fail(400, "malformed or unknown request method")
            else:
                self._state = _PROBING
                self._classify_method()
        elif msg.startswith("Data after"):
            # llhttp: input after a request that ended the connection (Connection: close or
            # HTTP/1.0). That request was complete and is answered; the rest is ignored.
            self._state = _DONE
        elif "PRI" in msg:
            self._fail(505, "HTTP/2 connection preface received; this server speaks HTTP/1.1 only")
        elif msg == "Invalid HTTP version":
            self._fail(505, "HTTP version not supported (only HTTP/1.0 and HTTP/1.1)")
        elif isinstance(exc, httptools.HttpParserInvalidURLError):
            self._fail(400, f"malformed request target: {msg}")
        else:
            self._fail(400, f"malformed request: {msg}")

    def _classify_method(self) -> None:
        head = self._head
        m = _TOKEN_RUN.match(head)  # always matches (a run of zero or more token bytes)
        end = m.end() if m else 0
        if end == len(head) and end < METHOD_PROBE_BYTES:
            return  # only token characters so far: wait for the byte that ends the method
        if 0 < end < len(head) and head[end] == 0x20:
            self._fail(501, f"method {head[:end].decode('latin-1')!r} is not implemented")
        else:
            self._fail(400, "malformed request line (not an HTTP request)")

    def _abort(self, status: int, reason: str) -> NoReturn:
        self._pending_error = ProtocolError(status, reason)
        raise _Abort(reason)

    # -- parser callbacks ----------------------------------------------------------------------------

    def _reset_message(self) -> None:
        self._url_parts: list[bytes] = []
        self._url_len = 0
        self._method_len = 0
        self._headers: list[tuple[str, str]] = []
        self._nfields = 0
        self._body_parts: list[bytes] = []
        self._body_len = 0
        self._content_length = 0
        self._chunked = False
        self._request: Request | None = None
        self._upgrading = False
        self._line_len = 0
        self._continue_pending = False
        # X-Traffic-Pattern of the request being read, known as soon as its header line arrives
        # (before the request is complete: a slowloris client's slot shows its pattern while R)
        self.partial_pattern: str | None = None

    def _on_message_begin(self) -> None:
        if self._replaying:
            return
        if self._state == _IDLE and self._completed_in_feed:
            self._head_known = False  # this request starts somewhere inside the chunk
        self._state = _HEADER
        self._began_in_feed = True
        self._phase_start = self._now
        self._phase_bytes = 0

    def _on_url(self, url: bytes) -> None:
        # llhttp delivers the URL in pieces (one per feed) so an endless URL is caught as it grows.
        if self._replaying:
            return
        self._url_parts.append(url)
        self._url_len += len(url)
        if not self._method_len:
            self._method_len = len(self._parser.get_method())
        line_len = self._method_len + 1 + self._url_len + 9  # " HTTP/1.1"
        limit = self.limits.limit_request_line
        if line_len > limit:
            self._abort(414, f"request line too long (LimitRequestLine {limit})")

    def _on_header(self, name: bytes, value: bytes) -> None:
        if self._replaying:
            return
        limits = self.limits
        self._nfields += 1
        max_fields = limits.limit_request_fields
        if max_fields and self._nfields > max_fields:
            self._abort(431, f"too many request header fields (LimitRequestFields {max_fields})")
        size = len(name) + 2 + len(value)  # "Name: value" as Apache measures the field line
        if size > limits.limit_request_field_size:
            self._abort(
                431,
                f"request header field too large (LimitRequestFieldSize {limits.limit_request_field_size})",
            )
        if self._state == _BODY:
            return  # a chunked trailer: counted against the limits, not kept
        lname = name.decode("latin-1").lower()
        self._headers.append((lname, value.decode("latin-1")))
        if lname == "x-traffic-pattern":
            self.partial_pattern = value.decode("latin-1")[:TRAFFIC_PATTERN_MAX]

    def _on_headers_complete(self) -> None:
        if self._replaying:
            self._replaying = False
            return  # the original request's headers were handled when it arrived
        parser = self._parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            if version == "0.9":
                self._abort(400, "HTTP/0.9 requests are not supported")
            self._abort(505, f"HTTP/{version} is not supported (only HTTP/1.0 and HTTP/1.1)")
        headers = self._headers
        host_count = 0
        content_length = 0
        chunked = expect_continue = False
        for k, v in headers:
            if k == "host":
                host_count += 1
            elif k == "content-length":
                content_length = int(v)  # llhttp validated the digits and refused duplicates
            elif k == "transfer-encoding":
                chunked = True  # llhttp refused every request TE not ending in chunked
            elif k == "expect":
                expect_continue = v.strip().lower() == "100-continue"
        if host_count > 1:
            self._abort(400, "more than one Host header")
        if host_count == 0 and version == "1.1":
            self._abort(400, "HTTP/1.1 request without a Host header")
        body_limit = self.limits.limit_request_body
        if body_limit and content_length > body_limit:
            self._abort(
                413,
                f"request body of {content_length} bytes is over the limit (LimitRequestBody {body_limit})",
            )
        self._content_length = content_length
        self._chunked = chunked
        target = b"".join(self._url_parts).decode("latin-1")
        self._request = Request(
            method=parser.get_method().decode("ascii"),
            target=target,
            http_version=version,
            headers=headers,
        )
        self._upgrading = parser.should_upgrade()
        self._state = _BODY
        self._phase_start = self._now
        self._phase_bytes = 0
        if version == "1.1" and (content_length or chunked) and expect_continue:
            # RFC 9110 15.2.1: tell the client to send its body now rather than after its own wait
            self._continue_pending = True

    def _on_body(self, body: bytes) -> None:
        self._body_parts.append(body)
        self._body_len += len(body)
        limit = self.limits.limit_request_body
        if limit and self._body_len > limit:
            self._abort(413, f"request body is over the limit (LimitRequestBody {limit})")

    def _on_message_complete(self) -> None:
        if self._upgrading and (self._content_length or self._chunked):
            # llhttp skipped the body of an Upgrade request; _after_upgrade reads it.
            self._upgrading = False
            return
        request = self._request
        assert request is not None  # _on_headers_complete made it before llhttp completes a message
        parts = self._body_parts
        if parts:
            request.body = parts[0] if len(parts) == 1 else b"".join(parts)
        self._events.append(request)
        self._completed_in_feed = True
        self._reset_message()
        self._state = _IDLE
