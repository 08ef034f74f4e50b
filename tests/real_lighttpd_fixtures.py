"""A real lighttpd (Debian's) on a free loopback port with mod_status at /server-status, in the
foreground (``lighttpd -D -f CONF``) so that it is our child, stopped by its pid. Shared by every
test that attaches to lighttpd.

What the configuration needs (and nothing else): ``server.bind`` on loopback and ``server.port``,
a ``server.document-root`` (the index page answers ``/``), ``server.modules = ("mod_status")`` and
``status.status-url`` (``?auto`` is the machine-readable form the source reads), an
``server.errorlog`` and ``server.pid-file`` inside the test's own directory, and a small
``server.max-connections``: the scoreboard has one letter per connection slot, so this is the
grid's size (lighttpd's default, a third of its file descriptors, is over a thousand cells).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import answers_200, free_port, need, wait_for

from mpmcore.procs import terminate

#: The grid's size: lighttpd's connection slots (server.max-connections).
LIGHTTPD_MAX_CONNECTIONS = 64

LIGHTTPD_CONF = """\
server.bind = "127.0.0.1"
server.port = {port}
server.document-root = "{dir}/htdocs"
server.errorlog = "{dir}/error.log"
server.pid-file = "{dir}/lighttpd.pid"
server.max-connections = {max_connections}
server.modules = ("mod_status")
status.status-url = "/server-status"
index-file.names = ("index.html")
"""


def write_lighttpd_conf(d: Path, port: int, max_connections: int = LIGHTTPD_MAX_CONNECTIONS) -> Path:
    """The configuration (and its document root) in ``d``; returns the file's path."""
    (d / "htdocs").mkdir(parents=True, exist_ok=True)
    (d / "htdocs" / "index.html").write_text("hello\n")
    conf = d / "lighttpd.conf"
    conf.write_text(LIGHTTPD_CONF.format(dir=d, port=port, max_connections=max_connections))
    return conf


@pytest.fixture
def real_lighttpd(tmp_path):
    lighttpd = need("lighttpd")
    port = free_port()
    d = tmp_path / "lighttpd"
    d.mkdir()
    conf = write_lighttpd_conf(d, port)
    with open(d / "stderr.log", "wb") as log:
        proc = subprocess.Popen([lighttpd, "-D", "-f", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for(lambda: proc.poll() is None and answers_200(port, "/server-status?auto"), timeout=15,
                     what="lighttpd up")
        except AssertionError:
            err = d / "error.log"
            raise AssertionError(f"lighttpd did not start: {(d / 'stderr.log').read_text()} "
                                 f"{err.read_text() if err.exists() else ''}") from None
        yield port
    finally:
        terminate(proc, 15)  # SIGTERM: lighttpd's shutdown
