"""What every child process has, whatever its MPM: its slot, its sockets, its stop signals."""

from __future__ import annotations

import os
import select
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from mpmcore import scoreboard as sb
from mpmcore.directives import Config
from mpmcore.http import conn as cn
from mpmcore.http.conn import ServerContext
from mpmcore.http.protocol import Limits, Request, RequestReadTimeout, Response
from mpmcore.procs import install_child_signals


@dataclass
class Listener:
    sock: socket.socket  # bound, listening, non-blocking; shared by every child
    tls: ssl.SSLContext | None = None

    def accept(self) -> tuple[socket.socket, Any] | None:
        """Accept one connection or return None when another child/thread won the race."""
        try:
            s, addr = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return None
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            s = self.tls.wrap_socket(s, server_side=True, do_handshake_on_connect=False)
        return s, addr


@dataclass
class ChildEnv:
    """Handed by the master to the MPM's ``run_child`` right after fork()."""

    scoreboard: sb.Scoreboard
    proc: int  # process slot
    generation: int
    config: Config
    listeners: list[Listener]
    log: Callable[[str, str, str], None]  # (module, level, message)
    make_handler: Callable[[ChildEnv], Callable[[Request], Response]]
    vhost: str
    fcgi_socket: str | None = None  # the FastCGI pool's socket when UnsafeFastCGIPool > 0
    stopping: threading.Event = field(default_factory=threading.Event)
    wake_r: int = -1
    wake_w: int = -1

    def server_context(self) -> ServerContext:
        c = self.config
        limits = Limits(
            limit_request_line=c["LimitRequestLine"], limit_request_field_size=c["LimitRequestFieldSize"],
            limit_request_fields=c["LimitRequestFields"], limit_request_body=c["LimitRequestBody"],
            keep_alive=c["KeepAlive"], max_keep_alive_requests=c["MaxKeepAliveRequests"],
            keep_alive_timeout=c["KeepAliveTimeout"])
        return ServerContext(
            handler=self.make_handler(self), limits=limits,
            read_timeout=RequestReadTimeout.parse(c["RequestReadTimeout"]),
            timeout=float(c["Timeout"]), keep_alive_timeout=float(c["KeepAliveTimeout"]),
            vhost=self.vhost, stopping=self.stopping, wake_fd=self.wake_r)

    def install_signals(self, on_graceful: Callable[[], None] | None = None) -> None:
        """Children: USR1 = finish what you are doing and exit (Apache's AP_SIG_GRACEFUL);
        TERM = exit now (default action); INT/HUP/WINCH are the master's business."""
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)

        def graceful(signum: int, frame: FrameType | None) -> None:
            if self.stop() and on_graceful:
                on_graceful()

        install_child_signals(graceful)

    def stop(self) -> bool:
        """Finish gracefully: set the stop event and wake whoever waits on the wake pipe (told by
        the master, or MaxConnectionsPerChild reached). False when already stopping."""
        if self.stopping.is_set():
            return False
        self.stopping.set()
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass
        return True

    def listener_poll(self) -> tuple[select.epoll, dict[int, Listener]]:
        """An epoll on the listening sockets (level-triggered; see prefork.py for why not
        EPOLLEXCLUSIVE) and the wake pipe; returns it and fd -> Listener."""
        ep = select.epoll()
        by_fd = {lst.sock.fileno(): lst for lst in self.listeners}
        for fd in by_fd:
            ep.register(fd, select.EPOLLIN)
        ep.register(self.wake_r, select.EPOLLIN)
        return ep, by_fd

    def accept(self, lst: Listener, ctx: ServerContext) -> cn.Conn | None:
        """One connection from ``lst`` as a ``conn.Conn``, or None (another child or thread won
        the race, or a transient error); other errors are logged, as Apache does, and skipped."""
        try:
            got = lst.accept()
        except OSError as e:
            if not cn.is_transient_accept_error(e):
                self.log(f"mpm_{self.config.mpm}", "error", f"accept: {e}")
            return None
        if got is None:
            return None
        return cn.Conn.accept(got[0], got[1], ctx, tls=lst.tls is not None)
