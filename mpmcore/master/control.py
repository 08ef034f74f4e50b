"""The control socket: one JSON request, one JSON answer, per connection.

The master's side (``ControlServer``) accepts on a Unix socket in the server's run directory and
hands each request to the master's command table; the client side (``ctl_request``,
``control_path``, ``find_servers``) is what ``mpmlab ctl`` and the dashboard use. Where a server's
files live (``run_dir_for``) and how a ``--listen`` is read (``parse_listen``) are shared by both.

The run directory is private (docs/reliability.md, "Run directory"): ``$XDG_RUNTIME_DIR/mpmlab/<listen>``
when the user has a runtime directory, else ``$TMPDIR/mpmlab-<uid>/<listen>``; each level is created
0700 and checked with lstat (a real directory, owned by this user, no access for others) before
anything is opened in it, and every file in it is opened without following a symbolic link
(``open_private``, ``write_private``, ``read_private``).
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mpmcore import scoreboard as sb
from mpmcore.directives import DirectiveError
from mpmcore.errorlog import UnsafeFile, open_own_file

CTL_MAX_REQUEST = 1 << 20  # a control request larger than this is refused
CTL_READ_TIMEOUT = 5.0
CTL_BACKLOG = 16

#: A control request (a JSON object with a "cmd") in, its JSON answer out.
Handler = Callable[[dict[str, Any]], dict[str, Any]]


class RunDirError(UnsafeFile):
    """The run directory, or a file in it, is not safe to use (another user's, a link, too open)."""


SAFE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC  # no link followed, not inherited by exec


def _owner(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _private_dir_problem(path: Path) -> str | None:
    """Why ``path`` is not a private directory of this user (None when it is one)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "it does not exist"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if st.st_uid != os.geteuid():
        return f"it belongs to {_owner(st.st_uid)}, not to {_owner(os.geteuid())}"
    if st.st_mode & 0o077:
        return f"its mode is {stat.S_IMODE(st.st_mode):04o}, not 0700"
    return None


def runtime_root() -> Path:
    """Where run directories live: ``$XDG_RUNTIME_DIR/mpmlab`` when XDG_RUNTIME_DIR names a private
    directory of this user, else ``$TMPDIR/mpmlab-<uid>`` (one per user: no two users share it)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg) and _private_dir_problem(Path(xdg)) is None:
        return Path(xdg) / "mpmlab"
    return Path(tempfile.gettempdir()) / f"mpmlab-{os.geteuid()}"


def run_dir_for(listen: str) -> Path:
    """The directory of the server listening on ``listen``: pid file, info.json, control socket,
    error log. Only a path: ``make_private_dir`` creates and checks it."""
    return runtime_root() / "".join(c if c.isalnum() else "_" for c in listen)


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and its parent, the runtime root) mode 0700 if missing, then check each
    with lstat: a directory (not a link) owned by this user. One of ours with looser permissions
    (made by an older version, or by mkdir with the umask) is tightened to 0700; anything else
    raises RunDirError naming the path, its owner and what to do. A parent writable by others must
    have the sticky bit (as /tmp has), or an entry made in it could be renamed away."""
    for d in (path.parent, path):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
        problem = _private_dir_problem(d)
        if problem and problem.startswith("its mode"):  # ours, only too open: make it private
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | SAFE_FLAGS)
            try:
                st = os.fstat(fd)
                if st.st_uid == os.geteuid():
                    os.fchmod(fd, 0o700)
            finally:
                os.close(fd)
            problem = _private_dir_problem(d)
        if problem:
            raise RunDirError(f"refusing to use the run directory {d}: {problem}. Remove it, or set "
                              "XDG_RUNTIME_DIR or TMPDIR to a directory of your own")
        parent = os.lstat(d.parent)
        if parent.st_mode & 0o002 and not parent.st_mode & stat.S_ISVTX:
            raise RunDirError(f"refusing to use the run directory {d}: its parent {d.parent} is writable by "
                              "everyone without the sticky bit")
    return path


def open_private(path: Path, flags: int, mode: int = 0o600) -> int:
    """os.open of a file in a run directory: never through a symbolic link, close-on-exec, and only
    a regular file of this user with one link (errorlog.open_own_file). Returns the descriptor."""
    return open_own_file(path, flags, mode)


def write_private(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically: a new file (O_EXCL, no link followed) beside it,
    renamed over it (rename replaces a link itself, never its target)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_private(path: Path, max_bytes: int = 1 << 16) -> bytes | None:
    """The contents of a file in a run directory (None when it does not exist), not through a link."""
    try:
        fd = open_private(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return os.read(fd, max_bytes)
    finally:
        os.close(fd)


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
    """A listening Unix socket at ``path`` that only its owner may connect to (mode 0600, set by
    the umask at bind: a chmod by path could follow a link put there meanwhile); a socket file
    left there by a master that died is replaced (unlink removes a link, never its target)."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        s.bind(str(path))
    except OSError:
        s.close()
        raise
    finally:
        os.umask(old_umask)
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
        try:
            data = json.loads(read_private(d / "info.json") or b"null")
        except (OSError, ValueError):  # RunDirError too: a link or another user's file is skipped
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
