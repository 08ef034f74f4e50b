"""Hold it there: what a careful operator would throw at a server, each check bounded in time.

- N malformed requests of each kind per MPM, a normal request answered after each batch, no child lost;
- repeated live switches and graceful restarts under keep-alive load, 0 requests lost;
- repeated start, stop and kill -9 of the master: no segment, socket or process left, the next start clean.

The figures these print (``-s``) are in docs/reliability.md.
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, free_port, http_get, pid_alive, wait_for
from test_switch import RetryingClient

from mpmcore import scoreboard as sb
from mpmcore.master import run_dir_for
from mpmcore.procs import terminate

N = 200  # requests of each malformed kind per MPM
READ_TIMEOUT = 5.0

HUGE = "x" * 20000  # past LimitRequestFieldSize (8190)
rng = random.Random(14)
MALFORMED: dict[str, list[bytes]] = {
    "truncated request line": [b"GET /ind", b"GE", b"GET / HTTP/1."],
    "bad header": [b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
                   b"GET / HTTP/1.1\r\nHost: x\r\n: empty name\r\n\r\n",
                   b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n"],
    "huge header": [f"GET / HTTP/1.1\r\nHost: x\r\nX-Big: {HUGE}\r\n\r\n".encode(),
                    ("GET / HTTP/1.1\r\nHost: x\r\n" + "".join(f"X-{i}: v\r\n" for i in range(200)) + "\r\n").encode(),
                    f"GET /{HUGE} HTTP/1.1\r\nHost: x\r\n\r\n".encode()],
    "bad chunked body": [b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
                         b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                         b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n"],
    "garbage bytes": [rng.randbytes(64) + b"\r\n\r\n", rng.randbytes(512), b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1"],
}


def _throw(port: int, data: bytes) -> str:
    """Send ``data``, half-close, read what comes back until the server closes: its status line (or
    'closed' when it answered nothing)."""
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except ConnectionResetError:
            pass
    return got.split(b"\r\n", 1)[0].decode("latin-1")[:40] if got else "closed"


def _mpm_children(srv) -> set[int]:
    return {p.pid for p in srv.live_children() if p.kind == sb.KIND_CHILD}


SETTINGS = {  # no spare-server maintenance kills a child during the test: the pids must stay
    "prefork": {"StartServers": 4, "MinSpareServers": 1, "MaxSpareServers": 64},
    "worker": {"StartServers": 2, "ThreadsPerChild": 8, "MinSpareThreads": 1, "MaxSpareThreads": 64},
    "event": {"StartServers": 2, "ThreadsPerChild": 8, "MinSpareThreads": 1, "MaxSpareThreads": 64},
}


@pytest.mark.parametrize("mpm", ["prefork", "worker", "event"])
def test_malformed_requests_lose_no_child(server_factory, mpm):
    srv = server_factory(mpm=mpm, settings={**SETTINGS[mpm], "RequestReadTimeout": "header=3 body=3"})
    wait_for(lambda: len(_mpm_children(srv)) == SETTINGS[mpm]["StartServers"], what="StartServers children")
    pids = _mpm_children(srv)
    t0 = time.monotonic()
    answers: dict[str, dict[str, int]] = {}
    for kind, samples in MALFORMED.items():
        seen: dict[str, int] = {}
        for i in range(N):
            a = _throw(srv.port, samples[i % len(samples)])
            seen[a] = seen.get(a, 0) + 1
        answers[kind] = seen
        status, _, _ = http_get(srv.port, "/")
        assert status == 200, f"after {N} x {kind}"
        assert _mpm_children(srv) == pids, f"{kind}: children changed {pids} -> {_mpm_children(srv)}"
    took = time.monotonic() - t0
    assert not any(a.startswith("HTTP/1.1 2") for kind, seen in answers.items() for a in seen), answers
    log = srv.log_text()
    assert "Traceback" not in log and ":crit]" not in log, log[-3000:]
    print(f"\n{mpm}: {N * len(MALFORMED)} malformed requests in {took:.1f} s, children {sorted(pids)} kept; "
          f"answers {answers}")


def test_switches_and_graceful_restarts_under_load_lose_nothing(server_factory):
    srv = server_factory(mpm="event", settings={"StartServers": 2, "MinSpareServers": 2, "MaxSpareServers": 8,
                                                "ThreadsPerChild": 8, "MinSpareThreads": 4, "MaxSpareThreads": 32})
    stop = threading.Event()
    clients = [RetryingClient(srv.port, stop) for _ in range(6)]
    for c in clients:
        c.start()

    def total() -> int:
        return sum(c.ok for c in clients)
    wait_for(lambda: total() > 50, what="traffic flowing")
    t0 = time.monotonic()
    steps = ["graceful", "prefork", "graceful", "worker", "graceful", "event", "graceful", "worker", "prefork",
             "graceful", "event"] * 2
    try:
        for step in steps:
            answer = srv.ctl("graceful") if step == "graceful" else srv.ctl("switch", mpm=step)
            assert answer["ok"], (step, answer)
            generation = answer["generation"]

            def settled(generation: int = generation) -> bool:
                procs = [p for p in srv.snapshot().procs if p.pid and p.kind == sb.KIND_CHILD]
                return bool(procs) and all(p.generation == generation for p in procs)
            wait_for(settled, timeout=45, what=f"{step}: only generation {generation} left")
            before = total()
            wait_for(lambda before=before: total() > before + 30, what=f"traffic after {step}")
            assert not any(c.failures for c in clients), [c.failures for c in clients]
    finally:
        stop.set()
        for c in clients:
            c.join(20)
    took = time.monotonic() - t0
    failures = [f for c in clients for f in c.failures]
    assert not failures, failures
    print(f"\n{len(steps)} switches and graceful restarts in {took:.1f} s: {total()} requests served, 0 lost, "
          f"{sum(c.retries for c in clients)} retried after a clean keep-alive close")


def _processes_of(pids: set[int]) -> list[int]:
    return [p for p in pids if pid_alive(p)]


def test_start_stop_and_kill_9_leave_nothing_behind(tmp_path):
    port = free_port()
    listen = f"127.0.0.1:{port}"
    seg = Path("/dev/shm" + sb.segment_name(listen))
    run_dir = run_dir_for(listen)
    t0 = time.monotonic()
    rounds = 6
    for i in range(rounds):
        mpm = ("prefork", "worker", "event")[i % 3]
        out = tmp_path / f"serve-{i}.out"
        with open(out, "wb") as f:
            proc = subprocess.Popen([sys.executable, "-m", "mpmcore.cli", "serve", "--mpm", mpm, "--listen", listen,
                                     "--set", "StartServers=2", "--set", "UnsafeFastCGIPool=1"],
                                    stdout=f, stderr=subprocess.STDOUT, cwd=str(ROOT))
        try:
            def up(proc: subprocess.Popen = proc, out: Path = out, i: int = i) -> bool:
                assert proc.poll() is None, f"round {i}: serve exited {proc.returncode}: {out.read_text()[-2000:]}"
                try:
                    return http_get(port, "/health", timeout=2)[0] == 200
                except OSError:
                    return False
            wait_for(up, timeout=20, what=f"round {i}: {mpm} serving")
            reader = sb.ScoreboardReader(sb.segment_name(listen))
            try:
                wait_for(lambda reader=reader: len([p for p in reader.snapshot().procs if p.pid]) >= 3, timeout=10,
                         what="2 children and the pool process")
                children = {p.pid for p in reader.snapshot().procs if p.pid}
            finally:
                reader.close()
            kill = i % 2 == 0  # every other round: kill -9 of the master; else a normal stop
            terminate(proc, 20, signal.SIGKILL if kill else signal.SIGTERM)
        finally:
            if proc.poll() is None:
                terminate(proc, 5, signal.SIGKILL)
        assert proc.returncode == (-signal.SIGKILL if kill else 0), out.read_text()[-2000:]
        # the children die with the master (PR_SET_PDEATHSIG): no process left either way
        wait_for(lambda children=children: not _processes_of(children), timeout=10,
                 what=f"round {i}: the children of a {'killed' if kill else 'stopped'} master gone")
        if kill:  # only the kernel's part is left: a segment nobody maps, the dead master's files
            assert seg.exists()
        else:
            assert not seg.exists(), "a stopped master leaves no segment"
            assert not (run_dir / "ctl.sock").exists() and not (run_dir / "fcgi.sock").exists()
            assert not (run_dir / "master.pid").exists() and not (run_dir / "info.json").exists()
        log = (run_dir / "error_log").read_text()
        assert "Traceback" not in log
    took = time.monotonic() - t0
    assert not seg.exists()
    stale_replaced = (run_dir / "error_log").read_text().count("removing stale scoreboard")
    assert stale_replaced == rounds // 2, "each start after a kill -9 replaced the stale segment"
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    print(f"\n{rounds} start/stop rounds ({rounds // 2} by kill -9) in {took:.1f} s: {stale_replaced} stale segments "
          "replaced at the next start, nothing left behind")
