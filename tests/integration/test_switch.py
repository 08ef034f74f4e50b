"""Live MPM switch: a graceful restart into another MPM on the same listening socket."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest
from conftest import ROOT, http_get, pid_alive, read_response, wait_for

from mpmcore import scoreboard as sb


class RetryingClient(threading.Thread):
    """A keep-alive client that behaves like a browser: an idempotent request whose connection was
    closed before any byte of the response arrived is retried once on a new connection. Anything
    else (refused connection, a cut response, a non-200) is a failure."""

    def __init__(self, port: int, stop: threading.Event, max_requests: int = 20000):
        super().__init__(daemon=True)
        self.port, self.stop, self.max_requests = port, stop, max_requests
        self.ok = self.retries = 0
        self.failures: list[str] = []
        self.sock: socket.socket | None = None

    def connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=15)

    def one(self) -> str:
        try:
            self.sock.sendall(b"GET /sleep?ms=5 HTTP/1.1\r\nHost: x\r\n\r\n")
            status, hdrs, _ = read_response(self.sock)
        except ConnectionError as e:
            if "before a full response head: b''" in str(e) or isinstance(e, (ConnectionResetError, BrokenPipeError)):
                return "retry"
            return f"cut: {e}"
        except OSError as e:
            return f"error: {e!r}"
        if status != 200:
            return f"status {status}"
        if hdrs.get("connection", "").lower() == "close":
            self.sock.close()
            self.connect()
        return "ok"

    def run(self) -> None:
        try:
            self.connect()
        except OSError as e:
            self.failures.append(f"connect: {e!r}")
            return
        while not self.stop.is_set() and self.ok < self.max_requests:
            r = self.one()
            if r == "retry":
                self.retries += 1
                try:
                    self.sock.close()
                    self.connect()
                except OSError as e:  # a refused connection is exactly what must not happen
                    self.failures.append(f"reconnect: {e!r}")
                    return
                r = self.one()
            if r == "ok":
                self.ok += 1
            else:
                self.failures.append(r)
                return
        self.sock.close()


def test_switch_prefork_worker_event_prefork_loses_nothing(server_factory):
    # directives for every MPM the switch goes through (each takes the ones that apply to it)
    srv = server_factory(mpm="prefork", settings={"StartServers": 3, "MinSpareServers": 2, "MaxSpareServers": 8,
                                                  "ThreadsPerChild": 8, "MinSpareThreads": 4, "MaxSpareThreads": 16})
    stop = threading.Event()
    clients = [RetryingClient(srv.port, stop) for _ in range(6)]
    for c in clients:
        c.start()
    total = lambda: sum(c.ok for c in clients)  # noqa: E731
    wait_for(lambda: total() > 50, what="traffic flowing")
    generation = srv.snapshot().glob.running_generation
    for mpm in ("worker", "event", "prefork"):
        answer = srv.ctl("switch", mpm=mpm)
        assert answer["ok"] and answer["mpm"] == mpm, answer
        generation += 1
        assert srv.snapshot().mpm == mpm and srv.snapshot().glob.running_generation == generation

        def settled(generation: int = generation) -> bool:
            snap = srv.snapshot()
            procs = [p for p in snap.procs if p.pid and p.kind == 0]
            return bool(procs) and all(p.generation == generation for p in procs)
        try:
            wait_for(settled, timeout=45, what=f"only {mpm} children left")
        except AssertionError:
            snap = srv.snapshot()
            procs = [(p.pid, p.generation, p.quiescing) for p in snap.procs if p.pid]
            raise AssertionError(f"old children remain: {procs}; letters {snap.letters()[:300]}; "
                                 f"log: {srv.log_text()[-3000:]}") from None
        before = total()
        wait_for(lambda before=before: total() > before + 50, what=f"traffic served by {mpm}")
        assert not any(c.failures for c in clients), [c.failures for c in clients]
    stop.set()
    for c in clients:
        c.join(20)
    failures = [f for c in clients for f in c.failures]
    assert not failures, failures
    assert total() > 200
    print(f"served {total()} requests, {sum(c.retries for c in clients)} retried after a clean close")
    log = srv.log_text()
    assert "switched: generation 1 runs worker (was prefork)" in log
    assert "switched: generation 3 runs prefork (was event)" in log


def test_ctl_cli_and_limits_needing_a_full_restart(server_factory):
    srv = server_factory(mpm="event", settings={"StartServers": 1})
    run = lambda *a: subprocess.run([sys.executable, "-m", "mpmcore.cli", "ctl", *a, "--server", srv.listen],  # noqa
                                    capture_output=True, text=True, timeout=60, cwd=str(ROOT))
    r = run("status")
    assert r.returncode == 0 and '"mpm": "event"' in r.stdout
    r = run("switch", "worker", "--set", "ThreadsPerChild=32")
    assert r.returncode == 0 and "runs worker" in r.stdout
    assert srv.snapshot().glob.threads_per_child == 32
    # beyond what the scoreboard was sized for at start: refused, with what to do instead
    r = run("graceful", "--set", "ThreadLimit=512", "--set", "ThreadsPerChild=256")
    assert r.returncode == 1 and "full restart" in r.stderr
    # a bad value names the directive and the range, and nothing changes
    r = run("graceful", "--set", "MaxRequestWorkers=abc")
    assert r.returncode == 1 and "MaxRequestWorkers" in r.stderr
    assert srv.snapshot().mpm == "worker"
    # a full restart may grow the scoreboard; readers re-attach
    r = run("restart", "--set", "ThreadLimit=128", "--set", "ThreadsPerChild=100", "--set", "MaxRequestWorkers=100")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: srv.snapshot().glob.thread_limit == 128, what="re-created scoreboard")
    assert srv.reader.thread_capacity == 128


@pytest.mark.parametrize("grow", [False, True])
def test_hard_restart_renews_the_fastcgi_pool(server_factory, grow):
    """A hard restart clears the scoreboard (or re-creates it, larger): the FastCGI pool is stopped
    with the children and a new one claims fresh rows, rather than running on in rows that were
    zeroed (shown G for ever) or in an unlinked segment."""
    srv = server_factory(mpm="worker", settings={"StartServers": 1, "UnsafeFastCGIPool": 2})

    def pool() -> list[tuple[int, int]]:
        snap = srv.snapshot()
        return sorted((p.pid, p.generation) for p in snap.procs if p.pid and p.kind == sb.KIND_FCGI)
    old = wait_for(lambda: len(p := pool()) == 2 and p, what="2 pool processes")
    extra = ["--set", "ThreadLimit=128", "--set", "ThreadsPerChild=100", "--set", "MaxRequestWorkers=100"] if grow else []
    assert srv.ctl("restart", set=dict(a.split("=") for a in extra[1::2]))["ok"]
    new = wait_for(lambda: len(p := pool()) == 2 and {pid for pid, _ in p}.isdisjoint(dict(old)) and p,
                   timeout=20, what="a new pool of 2 in the scoreboard")
    assert all(gen == srv.snapshot().glob.running_generation for _, gen in new)
    assert not any(pid_alive(pid) for pid, _ in old)
    status, _, body = http_get(srv.port, "/unsafe")
    assert status == 200 and b"fastcgi" in body
    assert srv.count_states()["G"] == 0  # no row left behind by the old pool
