"""A real nginx (Debian's) on a free loopback port with stub_status at /nginx_status, in the
foreground so that its master is our child, stopped by its pid. Shared by every test that
attaches to nginx."""

from __future__ import annotations

import subprocess

import pytest
from conftest import answers_200, free_port, need, wait_for

from mpmcore.procs import terminate

NGINX_CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  client_header_timeout 60s;
  server {{
    listen 127.0.0.1:{port};
    location = /nginx_status {{ stub_status; }}
    location / {{ return 200 "hello\\n"; }}
  }}
}}
"""


@pytest.fixture
def real_nginx(tmp_path):
    nginx = need("nginx")
    port = free_port()
    d = tmp_path / "nginx"
    d.mkdir()
    (d / "nginx.conf").write_text(NGINX_CONF.format(dir=d, port=port))
    with open(d / "stderr.log", "wb") as log:
        proc = subprocess.Popen([nginx, "-e", str(d / "error.log"), "-p", str(d), "-c", str(d / "nginx.conf"),
                                 "-g", "daemon off;"], stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for(lambda: proc.poll() is None and answers_200(port, "/nginx_status"), timeout=15, what="nginx up")
        except AssertionError:
            raise AssertionError(f"nginx did not start: {(d / 'stderr.log').read_text()} "
                                 f"{(d / 'error.log').read_text()}") from None
        yield port
    finally:
        terminate(proc, 15)  # SIGTERM: nginx's fast shutdown
