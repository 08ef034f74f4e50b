"""Real servers on loopback: Apache httpd 2.4 (Debian's apache2) under a chosen MPM, nginx and
lighttpd, started with a configuration written here and stopped by pid. The experiments' targets
(``mpmcore.experiments.targets``), the tests and bench/bench_traffic.py use them.

Apache: listens on 127.0.0.1:PORT only, serves a document root (``index.html`` 768 bytes unless the
caller writes its own files), has mod_status at /server-status (ExtendedStatus On), mod_reqtimeout
and mod_dir loaded. Its files (configuration, pid file, logs, document root) live in
``/tmp/real-apache-PORT``: Apache's children run as www-data and must be able to read the document
root, whatever TMPDIR the caller has. Apache runs as a daemon (``-k start``): it is stopped by the
pid in its pid file (``procs.ProcessIdentity.from_pidfile``).

nginx and lighttpd run in the foreground as children of the caller, stopped by their pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

__all__ = ["APACHE", "LIGHTTPD", "MPMS", "NGINX", "apache_config", "apache_dir", "lighttpd_config",
           "nginx_config", "pidfile", "read_pid", "signal_stop", "start", "version"]

APACHE = "/usr/sbin/apache2"
NGINX = "nginx"
LIGHTTPD = "lighttpd"
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


def apache_config(mpm: str, port: int, d: Path) -> str:
    """The configuration every launched Apache starts from (directives are appended to it)."""
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
LoadModule dir_module modules/mod_dir.so
LoadModule reqtimeout_module modules/mod_reqtimeout.so
TypesConfig /etc/mime.types
DocumentRoot {d}/htdocs
DirectoryIndex index.html
ExtendedStatus On
<Location /server-status>
  SetHandler server-status
</Location>
"""


def start(mpm: str, port: int, directives: str = "", timeout: float = 120.0, *, index: bool = True) -> int | None:
    """Write the configuration (``directives`` appended, one per line), start Apache as a daemon and
    return its master's pid once the pid file holds it (None if it never did: the caller polls the
    port and stops whatever started). Raises CalledProcessError when apache2 refuses to start.
    ``index``: write the default 768-byte index.html (False: the caller wrote the document root)."""
    if mpm not in MPMS:
        raise ValueError(f"MPM must be one of {', '.join(MPMS)}, not {mpm!r}")
    d = apache_dir(port)
    (d / "logs").mkdir(parents=True, exist_ok=True)
    (d / "htdocs").mkdir(parents=True, exist_ok=True)
    for run_dir in ("/var/run/apache2", "/var/lock/apache2"):  # Debian's build keeps its mutexes there
        os.makedirs(run_dir, exist_ok=True)
    if index and not (d / "htdocs" / "index.html").exists():
        (d / "htdocs" / "index.html").write_bytes(b"x" * 768)
    conf = d / "httpd.conf"
    conf.write_text(apache_config(mpm, port, d) + directives)
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


def nginx_config(port: int, d: Path, settings: dict[str, str]) -> str:
    """nginx on 127.0.0.1:PORT serving ``d/htdocs``, stub_status at /nginx_status. ``settings``:
    worker_processes, worker_connections, keepalive_timeout, keepalive_requests, client_header_timeout,
    client_body_timeout, send_timeout (nginx's own names and syntax)."""
    s = settings
    return f"""worker_processes {s['worker_processes']};
worker_rlimit_nofile {s['worker_rlimit_nofile']};
pid {d}/nginx.pid;
error_log {d}/error.log info;
user root;
events {{ worker_connections {s['worker_connections']}; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  default_type application/octet-stream;
  keepalive_timeout {s['keepalive_timeout']};
  keepalive_requests {s['keepalive_requests']};
  client_header_timeout {s['client_header_timeout']};
  client_body_timeout {s['client_body_timeout']};
  send_timeout {s['send_timeout']};
  server {{
    listen 127.0.0.1:{port};
    root {d}/htdocs;
    index index.html;
    location = /nginx_status {{ stub_status; }}
  }}
}}
"""


def lighttpd_config(port: int, d: Path, settings: dict[str, str]) -> str:
    """lighttpd on 127.0.0.1:PORT serving ``d/htdocs``, mod_status at /server-status. ``settings``:
    lighttpd's names (server.max-worker, server.max-connections, server.max-keep-alive-idle, ...)."""
    lines = [f'server.document-root = "{d}/htdocs"', f"server.port = {port}", 'server.bind = "127.0.0.1"',
             f'server.errorlog = "{d}/error.log"', 'server.modules = ("mod_status")',
             'status.status-url = "/server-status"', 'index-file.names = ("index.html")',
             'mimetype.assign = (".html" => "text/html", "" => "application/octet-stream")']
    lines += [f"{k} = {v}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


def version(kind: str) -> str:
    """The installed server's version line ("" when it is not installed or does not say)."""
    exe = {"apache": APACHE, "nginx": NGINX, "lighttpd": LIGHTTPD}[kind]
    path = exe if os.path.isabs(exe) and os.path.exists(exe) else shutil.which(exe)
    if path is None:
        return ""
    try:
        out = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    text = (out.stdout + out.stderr).strip().splitlines()
    first = text[0] if text else ""
    for prefix in ("Server version: ", "nginx version: "):
        first = first.removeprefix(prefix)
    return first.split(" - ")[0].strip()
