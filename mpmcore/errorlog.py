"""The error log, in Apache's format, shared by the master and its children.

Every process appends whole lines with one write(2) on an O_APPEND descriptor, so lines from
different processes never interleave. Other processes (the dashboard) follow the file with
``follow()``.

The log lives in the server's private run directory (master/control.py) and is opened with
``open_own_file``: never through a symbolic link, and only a regular file of this user with a single
link, so a link planted there cannot make the server append to someone else's file.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
import time

LEVELS = ("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")


def apache_time(t: float | None = None) -> str:
    """Apache 2.4's error-log time stamp: "Thu Nov 26 10:52:33.123456 2026"."""
    t = time.time() if t is None else t
    lt = time.localtime(t)
    return time.strftime("%a %b %d %H:%M:%S", lt) + f".{int((t % 1) * 1e6):06d} " + time.strftime("%Y", lt)


class UnsafeFile(RuntimeError):
    """A file (or directory) the server will not use: a link, another user's, a hard link."""


def open_own_file(path: str | os.PathLike[str], flags: int, mode: int = 0o600) -> int:
    """os.open without following a symbolic link (O_NOFOLLOW) and close-on-exec; the file must then
    be a regular file owned by this user with one link, else UnsafeFile (the descriptor closed).
    Returns the descriptor."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafeFile(f"refusing to open {path}: it is a symbolic link") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
        os.close(fd)
        raise UnsafeFile(f"refusing to use {path}: not a regular file of uid {os.geteuid()} with one link "
                         f"(mode {st.st_mode:o}, uid {st.st_uid}, {st.st_nlink} links)")
    return fd


class ErrorLog:
    def __init__(self, path: str, echo: bool = False, level: str = "info"):
        self.path = path
        self.fd = open_own_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.echo = echo
        self.max_level = LEVELS.index(level)

    def __call__(self, module: str, level: str, message: str) -> None:
        if LEVELS.index(level) > self.max_level:
            return
        line = (f"[{apache_time()}] [{module}:{level}] [pid {os.getpid()}:tid {threading.get_native_id()}] "
                f"{message}\n").encode("utf-8", "replace")
        try:
            os.write(self.fd, line)
        except OSError:
            pass
        if self.echo:
            try:
                sys.stderr.buffer.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def read_from(path: str, offset: int, max_bytes: int = 1 << 20) -> tuple[list[str], int]:
    """Whole lines appended since ``offset``; returns them and the new offset."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if offset > size:  # the file was replaced: start over
                offset = 0
            f.seek(offset)
            data = f.read(max_bytes)
    except FileNotFoundError:
        return [], 0
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    chunk = data[: end + 1]
    return chunk.decode("utf-8", "replace").splitlines(), offset + len(chunk)


def tail(path: str, lines: int = 200) -> tuple[list[str], int]:
    """The last ``lines`` lines and the offset after them."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return [], 0
    start = max(0, size - 256 * lines)
    got, end = read_from(path, start, size - start + 1)
    if start > 0 and got:
        got = got[1:]  # the first one is probably cut
    return got[-lines:], end
