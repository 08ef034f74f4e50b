"""mpmlab's traffic patterns as Locust user classes, for load beyond one machine.

Point Locust at this module and pick the patterns by class name::

    locust -f mpmcore/traffic/locustfile.py --host http://127.0.0.1:8080 \\
        --headless --users 60 --spawn-rate 20 --run-time 1m BrowserUser SlowlorisUser

    # across machines: one master, any number of workers (each runs its share of the users)
    locust -f mpmcore/traffic/locustfile.py --master --host http://10.0.0.5:8080 --mpmlab-allow-remote
    locust -f mpmcore/traffic/locustfile.py --worker --master-host 10.0.0.1

Each class does what the pattern of the same name does in ``mpmlab traffic`` (``catalogue.py``),
one Locust user being one of that pattern's clients, and every request carries
``X-Traffic-Pattern: <pattern>`` so the scoreboard shows which pattern holds a slot:

- ``SteadyUser``: closed-loop requests with ``--mpmlab-steady-think-time`` between them;
- ``BrowserUser``: a page, then ``--mpmlab-assets`` assets over up to 6 keep-alive connections
  (``--mpmlab-connections-per-browser``), then a think time with those connections left open;
- ``AjaxUser``: one keep-alive connection polling every ``--mpmlab-interval`` seconds;
- ``SlowlorisUser``, ``SlowPostUser``, ``SlowReadUser``: one connection each, trickling headers,
  trickling a body, reading a large reply through a small receive buffer (``--mpmlab-interval``);
- ``CpuUser``, ``IoUser``: ``/cpu?ms=`` and ``/sleep?ms=`` at ``--mpmlab-rate`` requests/s per user.

Like the built-in generator, the classes send traffic only to a loopback host unless
``--mpmlab-allow-remote`` is given. Locust is an optional dependency (``pip install 'mpmlab[locust]'``);
nothing else in mpmlab imports this module.
"""

from __future__ import annotations

import socket
import time
from typing import Any
from urllib.parse import urlsplit

import gevent
from gevent.pool import Group
from locust import FastHttpUser, User, constant, constant_throughput, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import WorkerRunner

from mpmcore.traffic.target import TargetError, resolve_target_sync

__all__ = ["AjaxUser", "BrowserUser", "CpuUser", "IoUser", "SlowPostUser", "SlowReadUser", "SlowlorisUser",
           "SteadyUser"]

HEADER = "X-Traffic-Pattern"


def _options(parser: Any) -> None:
    parser.add_argument("--mpmlab-think-time", type=float, default=5.0, include_in_web_ui=True,
                        help="mpmlab: seconds a BrowserUser idles between pages, its connections open")
    parser.add_argument("--mpmlab-steady-think-time", type=float, default=0.0, include_in_web_ui=True,
                        help="mpmlab: seconds a SteadyUser waits between requests")
    parser.add_argument("--mpmlab-assets", type=int, default=12, include_in_web_ui=True,
                        help="mpmlab: assets a BrowserUser fetches after each page")
    parser.add_argument("--mpmlab-asset-path", default="/bytes/4096", include_in_web_ui=True,
                        help="mpmlab: the path of a BrowserUser's assets")
    parser.add_argument("--mpmlab-connections-per-browser", type=int, default=6, include_in_web_ui=True,
                        help="mpmlab: keep-alive connections per BrowserUser")
    parser.add_argument("--mpmlab-interval", type=float, default=1.0, include_in_web_ui=True,
                        help="mpmlab: seconds between an AjaxUser's polls and between the slow users' trickles")
    parser.add_argument("--mpmlab-rate", type=float, default=1.0, include_in_web_ui=True,
                        help="mpmlab: requests/s of each CpuUser or IoUser")
    parser.add_argument("--mpmlab-ms", type=int, default=0, include_in_web_ui=True,
                        help="mpmlab: ms of CPU (CpuUser, default 50) or waiting (IoUser, default 200) per request")
    parser.add_argument("--mpmlab-allow-remote", action="store_true", default=False,
                        help="mpmlab: allow a --host that is not on this machine")


events.init_command_line_parser.add_listener(_options)  # type: ignore[no-untyped-call]  # Locust leaves add_listener unannotated


def _report_before_stopped(environment: Environment, **_: Any) -> None:
    """On a worker told to stop, send the last samples to the master at once.

    Locust's worker answers "stop" with "client_stopped" and leaves its last samples (a slow user's
    connection counted as it is closed by the stop) to the next periodic report, up to 3 s later, so
    a master already "stopped" could still change its counts. Sent here, at the end of the worker's
    stop and before "client_stopped", they reach the master first: once the master (and the
    dashboard reading it) says "stopped", its counts are final. Locust does the same on "quit"."""
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner._send_stats()  # Locust's own final report (see WorkerRunner's "quit"); there is no public one


events.test_stop.add_listener(_report_before_stopped)  # type: ignore[no-untyped-call]  # as above


def _opt(env: Environment, name: str) -> Any:
    return getattr(env.parsed_options, "mpmlab_" + name)


def _checked_host(user: User) -> tuple[str, int]:
    """The user's --host as (host, port), refused unless it is loopback or remote targets are allowed."""
    host = user.host or ""
    try:
        resolve_target_sync(host, allow_remote=bool(_opt(user.environment, "allow_remote")))
    except TargetError as e:
        user.environment.events.user_error.fire(user_instance=user, exception=e, tb=None)
        raise StopUser(str(e)) from None
    u = urlsplit(host)
    return u.hostname or "127.0.0.1", u.port or (443 if u.scheme == "https" else 80)


class _PatternHttpUser(FastHttpUser):
    abstract = True
    pattern = ""

    def on_start(self) -> None:
        _checked_host(self)

    def get(self, path: str, name: str | None = None) -> None:
        with self.client.get(path, headers={HEADER: self.pattern}, name=name or path, catch_response=True) as r:
            if r.status_code >= 400:
                r.failure(f"HTTP {r.status_code}")


class SteadyUser(_PatternHttpUser):
    """``steady`` (closed model): request, answer, think, repeat, on one keep-alive connection."""

    pattern = "steady"
    concurrency = 1

    def wait_time(self) -> float:
        return float(_opt(self.environment, "steady_think_time"))

    @task
    def page(self) -> None:
        self.get("/")


class BrowserUser(_PatternHttpUser):
    """``browsers``: a page, its assets in parallel over up to 6 keep-alive connections, then idle
    with the connections open (what fills prefork and worker with K slots)."""

    pattern = "browsers"
    concurrency = 6

    def __init__(self, environment: Environment) -> None:
        self.concurrency = int(_opt(environment, "connections_per_browser"))  # the client's pool size
        super().__init__(environment)

    def wait_time(self) -> float:
        return float(_opt(self.environment, "think_time"))

    @task
    def visit(self) -> None:
        self.get("/")
        group = Group()
        path = str(_opt(self.environment, "asset_path"))
        for _ in range(int(_opt(self.environment, "assets"))):
            group.spawn(self.get, path, "asset")
        group.join()


class AjaxUser(_PatternHttpUser):
    """``ajax``: one keep-alive connection polling every interval."""

    pattern = "ajax"
    concurrency = 1

    def wait_time(self) -> float:
        return float(_opt(self.environment, "interval"))

    @task
    def poll(self) -> None:
        self.get("/")


class CpuUser(_PatternHttpUser):
    """``cpu``: CPU-bound requests (``/cpu?ms=``) at a rate per user."""

    pattern = "cpu"

    def on_start(self) -> None:
        super().on_start()
        self._pace = constant_throughput(float(_opt(self.environment, "rate")))

    def wait_time(self) -> float:
        return float(self._pace(self))

    @task
    def work(self) -> None:
        self.get(f"/cpu?ms={int(_opt(self.environment, 'ms')) or 50}", "/cpu")


class IoUser(CpuUser):
    """``io``: I/O-bound requests (``/sleep?ms=``): the server waits, holding a worker."""

    pattern = "io"

    @task
    def work(self) -> None:
        self.get(f"/sleep?ms={int(_opt(self.environment, 'ms')) or 200}", "/sleep")


class _SlowUser(User):
    """One raw connection held open by trickling; when the server closes it, Locust counts a
    failure and the user reconnects (as the built-in slow patterns count reconnects)."""

    abstract = True
    pattern = ""
    wait_time = constant(0)

    def on_start(self) -> None:
        self.address = _checked_host(self)

    def _connect(self, rcvbuf: int = 0) -> socket.socket:
        s = socket.socket(socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(30)
        s.connect(self.address)
        return s

    def _hold(self, first: bytes, trickle: bytes, what: str) -> None:
        """Send ``first``, then ``trickle`` every interval until the server closes or answers."""
        interval = float(_opt(self.environment, "interval"))
        start = time.perf_counter()
        with self.environment.events.request.measure(self.pattern.upper(), what), self._connect() as s:
            s.sendall(first)
            s.setblocking(False)
            while True:
                gevent.sleep(interval)
                try:
                    if s.recv(4096, socket.MSG_PEEK):
                        raise ConnectionError(f"the server answered after {time.perf_counter() - start:.1f}s")
                    raise ConnectionError(f"the server closed the connection after {time.perf_counter() - start:.1f}s")
                except BlockingIOError:
                    pass  # still open and silent: trickle on
                s.sendall(trickle)


class SlowlorisUser(_SlowUser):
    """``slowloris``: a request whose headers never end, one more header line every interval."""

    pattern = "slowloris"

    @task
    def hold(self) -> None:
        host = f"{self.address[0]}:{self.address[1]}"
        first = f"GET / HTTP/1.1\r\nHost: {host}\r\n{HEADER}: slowloris\r\n".encode()
        self._hold(first, b"X-a: b\r\n", "headers never end")


class SlowPostUser(_SlowUser):
    """``slow-post``: a POST announcing 1 MiB whose body arrives one byte every interval."""

    pattern = "slow-post"

    @task
    def hold(self) -> None:
        host = f"{self.address[0]}:{self.address[1]}"
        first = (f"POST / HTTP/1.1\r\nHost: {host}\r\n{HEADER}: slow-post\r\n"
                 f"Content-Length: 1048576\r\n\r\n").encode()
        self._hold(first, b"x", "body never ends")


class SlowReadUser(_SlowUser):
    """``slow-read``: a 10 MiB reply read 1 KiB every interval through a 4 KiB receive buffer."""

    pattern = "slow-read"

    @task
    def hold(self) -> None:
        interval = float(_opt(self.environment, "interval"))
        host = f"{self.address[0]}:{self.address[1]}"
        got = 0
        with self.environment.events.request.measure("SLOW-READ", "/bytes/10485760") as ctx:
            with self._connect(rcvbuf=4096) as s:
                s.sendall(f"GET /bytes/10485760 HTTP/1.1\r\nHost: {host}\r\n{HEADER}: slow-read\r\n"
                          f"Connection: close\r\n\r\n".encode())
                while chunk := s.recv(1024):
                    got += len(chunk)
                    gevent.sleep(interval)
            ctx["response_length"] = got
