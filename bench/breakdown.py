"""Per-request costs of mpmcore's request path, measured in-process on the real components (ns).

Used by ``bench_peers.py --part breakdown``. Each figure is the median over ``REPEATS`` runs of
``N`` operations, timed with perf_counter_ns; the steps are the ones a request goes through in
mpmcore/http/conn.py and mpmcore/mpm/event.py, on a real scoreboard segment, real sockets (a
loopback socketpair), a real epoll and real threads for the hand-offs.
"""

from __future__ import annotations

import os
import queue
import select
import socket
import statistics
import threading
import time
from collections.abc import Callable

from mpmcore import scoreboard as sb
from mpmcore.content.handlers import Handlers
from mpmcore.http import conn as cn
from mpmcore.http.protocol import NEED_DATA, HTTPConnection, Limits, Request, RequestReadTimeout

N = 20000
REPEATS = 5
WRK_REQUEST = b"GET /bytes/1024 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"


def _per_op(run: Callable[[int], None], n: int = N) -> float:
    """ns per operation: median over REPEATS runs of ``run(n)``."""
    out = []
    for _ in range(REPEATS):
        t0 = time.perf_counter_ns()
        run(n)
        out.append((time.perf_counter_ns() - t0) / n)
    return statistics.median(out)


def _http() -> HTTPConnection:
    limits = Limits(limit_request_line=8190, limit_request_field_size=8190, limit_request_fields=100,
                    limit_request_body=0, keep_alive=True, max_keep_alive_requests=0, keep_alive_timeout=5)
    return HTTPConnection(limits, RequestReadTimeout.parse("header=20-40,MinRate=500 body=20,MinRate=500"),
                          timeout=60.0, server="mpmlab", now=time.monotonic())


def protocol_costs() -> dict[str, float]:
    """The three stages of one request on one kept-alive connection, timed inside one loop (the
    parser's state runs on from request to request as on a real connection)."""
    http, handler = _http(), Handlers()
    clock = time.perf_counter_ns
    runs: list[tuple[float, float, float]] = []
    for _ in range(REPEATS):
        t_parse = t_handle = t_reply = 0
        t_clock = clock()
        for _ in range(100):
            clock()
        tick = (clock() - t_clock) / 101  # one clock() call: subtracted from each stage
        for _ in range(N):
            t0 = clock()
            http.receive_data(WRK_REQUEST, 0.0)
            req = http.next_event()
            t1 = clock()
            assert isinstance(req, Request)
            resp = handler(req)
            t2 = clock()
            cn._reply_parts(http, req, resp)
            assert http.next_event() is NEED_DATA
            t3 = clock()
            t_parse += t1 - t0
            t_handle += t2 - t1
            t_reply += t3 - t2
        runs.append((t_parse / N - tick, t_handle / N - tick, t_reply / N - tick))
    return {"parse (receive_data + next_event)": statistics.median(r[0] for r in runs),
            "handler (/bytes/1024)": statistics.median(r[1] for r in runs),
            "response head + body (send_response_parts)": statistics.median(r[2] for r in runs)}


def scoreboard_costs() -> dict[str, float]:
    name = f"/mpmlab-bench-{os.getpid()}"
    board = sb.Scoreboard.create(name, 2, 32)
    try:
        slot = board.slot(0, 0)
        slot.claim(os.getpid(), threading.get_native_id(), 1, sb.READY)
        slot.lock = threading.Lock()
        slot.sticky = threading.Event()

        def state(n: int) -> None:
            for i in range(n):
                slot.set(sb.BUSY_READ if i & 1 else sb.BUSY_LOG)

        def started(n: int) -> None:
            for _ in range(n):
                slot.request_started("GET /bytes/1024 HTTP/1.1", "127.0.0.1:8080", "HTTP/1.1", None)

        def finished(n: int) -> None:
            for _ in range(n):
                slot.request_finished(1024, 0.5, 0.25)

        def child_kwargs(n: int) -> None:  # the generic path (before issue 13, every publish)
            for i in range(n):
                board.update_child(0, pid=1, connections=i, keep_alive=3, write_completion=0,
                                   lingering_close=0, not_accepting=0)

        counters = board.child_counters(0)

        def child(n: int) -> None:
            for i in range(n):
                counters.publish(1, 0, i, 0, 0, 3)

        return {"state change (SlotWriter.set)": _per_op(state),
                "request started (SlotWriter.request_started)": _per_op(started),
                "request's counters (SlotWriter.request_finished)": _per_op(finished),
                "event child counters, generic (Scoreboard.update_child)": _per_op(child_kwargs),
                "event child counters (ChildCounters.publish)": _per_op(child)}
    finally:
        board.unlink()
        board.close()


def io_costs() -> dict[str, float]:
    a, b = socket.socketpair()
    try:
        reply = b"H" * 200 + b"x" * 1024
        b.setblocking(False)

        def recv_empty(n: int) -> None:
            for _ in range(n):
                try:
                    b.recv(65536)
                except BlockingIOError:
                    pass

        def send_recv(n: int) -> None:  # one request in, one reply out
            for _ in range(n):
                a.send(WRK_REQUEST)
                b.recv(65536)
                b.send(reply)
                a.recv(65536)

        def setblocking(n: int) -> None:
            for _ in range(n):
                b.setblocking(False)

        def settimeout_recv(n: int) -> None:  # what _recv does: settimeout, then a recv (poll + recv)
            for _ in range(n):
                a.send(WRK_REQUEST)
                b.settimeout(5.0)
                b.recv(65536)
            b.setblocking(False)

        def wait_select(n: int) -> None:  # worker's wait for its next request (data already there)
            a.send(b"x")
            for _ in range(n):
                select.select([b], [], [], 5.0)
            b.recv(16)

        def rusage(n: int) -> None:
            for _ in range(n):
                cn._thread_cpu()

        ep = select.epoll()
        ep.register(b.fileno(), select.EPOLLIN | select.EPOLLONESHOT)
        a.send(b"x")

        def epoll_cycle(n: int) -> None:  # park (re-arm one-shot) + the listener's poll seeing it
            for _ in range(n):
                ep.modify(b.fileno(), select.EPOLLIN | select.EPOLLONESHOT)
                ep.poll(0)

        out = {"recv, nothing there (EAGAIN)": _per_op(recv_empty),
               "recv request + send 1 KiB reply (2 syscalls, client side excluded: halved)": _per_op(send_recv) / 2,
               "setblocking (ioctl)": _per_op(setblocking),
               "settimeout + recv (worker/prefork read: ioctl + poll + recv)": _per_op(settimeout_recv),
               "select, data ready (worker's keep-alive wait)": _per_op(wait_select),
               "getrusage (per-request CPU)": _per_op(rusage),
               "epoll re-arm + poll (park, listener sees it)": _per_op(epoll_cycle)}
        ep.close()
        return out
    finally:
        a.close()
        b.close()


def handoff_costs() -> dict[str, float]:
    """One hand-off between two threads (a ping-pong's round trip / 2): the listener giving a
    connection to a worker, with the wake-up of the waiting thread and the GIL changing hands."""
    out = {}
    for label, make in (("queue.SimpleQueue", queue.SimpleQueue), ("queue.Queue", queue.Queue)):
        ping, pong = make(), make()

        def echo(ping: queue.SimpleQueue[int | None] | queue.Queue[int | None] = ping,
                 pong: queue.SimpleQueue[int] | queue.Queue[int] = pong) -> None:
            while (v := ping.get()) is not None:
                pong.put(v)

        t = threading.Thread(target=echo, daemon=True)
        t.start()

        def run(n: int, ping: queue.SimpleQueue[int | None] | queue.Queue[int | None] = ping,
                pong: queue.SimpleQueue[int] | queue.Queue[int] = pong) -> None:
            for i in range(n):
                ping.put(i)
                pong.get()

        out[f"thread hand-off ({label}, wake-up + GIL switch)"] = _per_op(run, N // 4) / 2
        ping.put(None)
        t.join()
    return out


def breakdown() -> dict[str, dict[str, float]]:
    parts = {"protocol": protocol_costs(), "scoreboard": scoreboard_costs(), "io": io_costs(),
             "handoff": handoff_costs()}
    print(f"== Per-request costs, in-process (ns per operation, median of {REPEATS} x {N}) ==")
    for group, costs in parts.items():
        for k, v in costs.items():
            print(f"{group:<11} {k:<80} {v:>9.0f}")
    p, s, io, h = parts["protocol"], parts["scoreboard"], parts["io"], parts["handoff"]
    common = (sum(p.values()) + s["request started (SlotWriter.request_started)"]
              + s["request's counters (SlotWriter.request_finished)"] + 2 * s["state change (SlotWriter.set)"]
              + io["getrusage (per-request CPU)"])
    sb_per_req = (s["request started (SlotWriter.request_started)"]
                  + s["request's counters (SlotWriter.request_finished)"] + 2 * s["state change (SlotWriter.set)"])
    send_recv = io["recv request + send 1 KiB reply (2 syscalls, client side excluded: halved)"]
    hit = common + send_recv
    # the event worker parks the connection (epoll re-arm, one counters step: idle + parked), the
    # listener sees it readable and hands it back (one counters step: unparked + worker reserved,
    # a thread hand-off), the worker's slot goes _ then R again
    miss = (hit + io["epoll re-arm + poll (park, listener sees it)"]
            + 2 * s["event child counters (ChildCounters.publish)"] + 2 * s["state change (SlotWriter.set)"]
            + h["thread hand-off (queue.SimpleQueue, wake-up + GIL switch)"])
    worker = (common + io["select, data ready (worker's keep-alive wait)"] + send_recv
              + io["settimeout + recv (worker/prefork read: ioctl + poll + recv)"] - send_recv / 2)
    print(f"scoreboard writes per request (started, 2 state changes, counters): {sb_per_req:.0f} ns")
    print(f"a request's own work (parse, handler, head, scoreboard, getrusage, recv + send): ~{hit / 1000:.1f} us")
    print(f"event, kept-alive request (parked, handed back by the listener): ~{miss / 1000:.1f} us "
          f"(+{(miss - hit) / 1000:.1f} us: epoll, 2 counter steps, 2 state changes, a thread hand-off)")
    print(f"worker (its thread waits on the connection: select, then ioctl + poll + recv): ~{worker / 1000:.1f} us")
    return {**parts, "paths_ns": {"scoreboard_per_request": sb_per_req, "event_hit": hit, "event_miss": miss,
                                  "worker": worker}}
