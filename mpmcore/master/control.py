"""The control socket: one JSON request, one JSON answer, per connection.

The master's side (``ControlServer``) accepts on a Unix socket in the server's run directory and
hands each request to the master's command table; the client side (``ctl_request``,
``control_path``, ``find_servers``) is what ``mpmlab ctl`` and the dashboard use. Where a server's
files live (``run_dir_for``) and how a ``--listen`` is read (``parse_listen``) are shared by both.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mpmcore import scoreboard as sb
from mpmcore.directives import DirectiveError

CTL_MAX_REQUEST = 1 << 20  # a control request larger than this is refused
CTL_READ_TIMEOUT = 5.0
CTL_BACKLOG = 16

#: A control request (a JSON object with a "cmd") in, its JSON answer out.
Handler = Callable[[dict[str, Any]], dict[str, Any]]


def runtime_root() -> Path:
    return Path(tempfile.gettempdir()) / "mpmlab"


def run_dir_for(listen: str) -> Path:
    """The directory of the server listening on ``listen``: pid file, info.json, control socket,
    error log."""
    return runtime_root() / "".join(c if c.isalnum() else "_" for c in listen)


def parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        p = int(port)
    except ValueError:
        raise ValueError(f"--listen must be HOST:PORT, not {text!r}") from None
    if not 0 <= p <= 65535:
        raise ValueError(f"port {p} out of range 0..65535")
    return host, p



def listen_unix(path: Path, backlog: int) -> socket.socket:
    """A listening Unix socket at ``path`` that only its owner may connect to (mode 0600); a socket
    file left there by a master that died is replaced."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    os.chmod(path, 0o600)
    s.listen(backlog)
    return s

class ControlServer:
    """The master's end of the control socket. Non-blocking: the master's loop selects on
    ``fileno()`` and calls ``serve()`` when it is readable."""

    def __init__(self, path: Path):
        self.path = path
        self.sock: socket.socket | None = None

    def open(self) -> None:
        s = listen_unix(self.path, CTL_BACKLOG)
        s.setblocking(False)
        self.sock = s

    def fileno(self) -> int:
        return -1 if self.sock is None else self.sock.fileno()

    def close(self) -> None:
        if self.sock is None:
            return
        self.sock.close()
        self.sock = None
        try:
            self.path.unlink()
        except OSError:
            pass

    def close_in_child(self) -> None:
        """A forked child drops its copy of the socket; the file stays (it is the master's)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def serve(self, handle: Handler) -> None:
        """Answer every connection waiting now, one request each."""
        if self.sock is None:
            return
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            with conn:
                conn.settimeout(CTL_READ_TIMEOUT)
                try:
                    request = _read_line(conn)
                    conn.sendall(json.dumps(answer(request, handle)).encode() + b"\n")
                except OSError:
                    pass


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n") and len(data) < CTL_MAX_REQUEST:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def answer(data: bytes, handle: Handler) -> dict[str, Any]:
    """The answer to one request's bytes: the handler's, or ``{"ok": false, "error": ...}`` (with
    the directive a DirectiveError names)."""
    try:
        req = json.loads(data or b"null")
        if not isinstance(req, dict):
            raise ValueError("a control request is a JSON object with a 'cmd'")
        return handle(req)
    except DirectiveError as e:
        return {"ok": False, "error": str(e), "directive": e.directive}
    except (ValueError, KeyError, TypeError) as e:
        return {"ok": False, "error": str(e)}


# ---------------------------------------------------------------------------------------------
# the client (the CLI and the dashboard)
def find_servers() -> list[dict[str, Any]]:
    """Masters running on this machine, from their run directories."""
    out: list[dict[str, Any]] = []
    root = runtime_root()
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        info = d / "info.json"
        try:
            data = json.loads(info.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and sb.pid_alive(int(data.get("pid", 0))):
            out.append(data)
    return out


def control_path(server: str | None) -> str:
    if server:
        return str(run_dir_for(server) / "ctl.sock")
    servers = find_servers()
    if len(servers) == 1:
        return str(servers[0]["control"])
    if not servers:
        raise RuntimeError("no mpmlab server runs here (start one with `mpmlab serve`)")
    raise RuntimeError("several servers run here; name one with --server: "
                       + ", ".join(s["listen"] for s in servers))


def ctl_request(path: str, req: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(req).encode() + b"\n")
        data = _read_answer(s)
    got = json.loads(data)
    if not isinstance(got, dict):
        raise ValueError(f"the control socket answered {got!r}, not a JSON object")
    return got


def _read_answer(s: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data
