"""Start and stop a real Apache httpd 2.4 (Debian's apache2) on loopback with a chosen MPM and extra
directives, to compare mpmcore with the real thing under the same traffic. Used by the tests'
fixtures (real_apache_fixtures.py) and by bench/bench_traffic.py; needs no pytest.

The server listens on 127.0.0.1:PORT only, serves a 768-byte /index.html, and has mod_status at
/server-status (ExtendedStatus On) and mod_reqtimeout loaded. Its files (configuration, pid file,
logs, document root) live in /tmp/real-apache-PORT: Apache's children run as www-data and must be
able to read the document root, whatever TMPDIR the caller has.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

__all__ = ["APACHE", "MPMS", "apache_dir", "pidfile", "read_pid", "signal_stop", "start"]

APACHE = "/usr/sbin/apache2"
MPMS = ("prefork", "worker", "event")
#: the pid file appears once the master has daemonized (`-k start`)
PIDFILE_WAIT = 5.0


def apache_dir(port: int) -> Path:
    return Path(f"/tmp/real-apache-{port}")


def pidfile(port: int) -> Path:
    return apache_dir(port) / "httpd.pid"


def read_pid(port: int) -> int | None:
    """The master's pid from its pid file, or None when there is none (not started, or gone)."""
    try:
        return int(pidfile(port).read_text().strip())
    except (OSError, ValueError):
        return None


def _config(mpm: str, port: int, d: Path) -> str:
    return f"""ServerRoot /usr/lib/apache2
PidFile {d}/httpd.pid
ErrorLog {d}/logs/error.log
LogLevel info
Listen 127.0.0.1:{port}
User www-data
Group www-data
ServerName localhost
LoadModule mpm_{mpm}_module modules/mod_mpm_{mpm}.so
LoadModule authz_core_module modules/mod_authz_core.so
LoadModule status_module modules/mod_status.so
LoadModule mime_module modules/mod_mime.so
LoadModule reqtimeout_module modules/mod_reqtimeout.so
TypesConfig /etc/mime.types
DocumentRoot {d}/htdocs
ExtendedStatus On
<Location /server-status>
  SetHandler server-status
</Location>
"""


def start(mpm: str, port: int, directives: str = "", timeout: float = 120.0) -> int | None:
    """Write the configuration (``directives`` appended, one per line), start Apache as a daemon and
    return its master's pid once the pid file holds it (None if it never did: the caller polls the
    port and stops whatever started). Raises CalledProcessError when apache2 refuses to start."""
    if mpm not in MPMS:
        raise ValueError(f"MPM must be one of {', '.join(MPMS)}, not {mpm!r}")
    d = apache_dir(port)
    (d / "logs").mkdir(parents=True, exist_ok=True)
    (d / "htdocs").mkdir(parents=True, exist_ok=True)
    for run_dir in ("/var/run/apache2", "/var/lock/apache2"):  # Debian's build keeps its mutexes there
        os.makedirs(run_dir, exist_ok=True)
    (d / "htdocs" / "index.html").write_bytes(b"x" * 768)
    conf = d / "httpd.conf"
    conf.write_text(_config(mpm, port, d) + directives)
    subprocess.run([APACHE, "-f", str(conf), "-k", "start"], check=True, capture_output=True, timeout=timeout)
    deadline = time.monotonic() + PIDFILE_WAIT
    while time.monotonic() < deadline:
        pid = read_pid(port)
        if pid is not None:
            return pid
        time.sleep(0.1)
    return None


def signal_stop(port: int) -> bool:
    """SIGTERM to the master named in the pid file (Apache's own stop); False when there is none."""
    pid = read_pid(port)
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True
