"""The container files, as far as they can be checked without a Docker engine (none runs here).

* docker-compose.yml: Debian's docker-compose validates it (``config -q``), with and without the
  prometheus profile, and refuses it without MPMLAB_TOKEN.
* deploy/apache/httpd.conf and deploy/nginx/default.conf: run for real with Debian's apache2 and
  nginx on a loopback port (paths rewritten from the official images' layout), and attached to.
* deploy/prometheus/prometheus.yml: parsed; it scrapes the dashboard's /metrics.
* the grafana profile: Grafana with deploy/grafana mounted where its provisioning reads (the
  dashboard's queries are checked against a real /metrics in tests/external/test_grafana.py).
* Dockerfile: parsed by a small reader of the Dockerfile grammar (instructions, continuations,
  stages, JSON forms); every file it copies exists in the build context; its command line runs.
  Not checked: that the images build and start (that needs an engine).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import ROOT, answers_200, free_port, need, wait_for
from real_apache_fixtures import kill_apache

from mpmcore.procs import ProcessIdentity, terminate
from mpmcore.sources.attach import ApacheSource, NginxSource

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with PyYAML (docker-compose's own dependency)
TOKEN = "test-token-123"


def _compose(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != "MPMLAB_TOKEN"}
    e.update(env or {})
    return subprocess.run([need("docker-compose"), "-f", str(ROOT / "docker-compose.yml"), *args], cwd=str(ROOT), env=e,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def compose_config() -> dict:
    r = _compose("--profile", "grafana", "config", env={"MPMLAB_TOKEN": TOKEN})
    assert r.returncode == 0, r.stderr
    out = subprocess.run([SYSTEM_PYTHON, "-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"],
                         input=r.stdout, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_compose_file_validates():
    r = _compose("config", "-q", env={"MPMLAB_TOKEN": TOKEN})
    assert r.returncode == 0, r.stderr
    r = _compose("--profile", "prometheus", "config", "-q", env={"MPMLAB_TOKEN": TOKEN})
    assert r.returncode == 0, r.stderr
    r = _compose("--profile", "grafana", "config", "-q", env={"MPMLAB_TOKEN": TOKEN})
    assert r.returncode == 0, r.stderr
    r = _compose("config", "--services", env={"MPMLAB_TOKEN": TOKEN})
    assert set(r.stdout.split()) == {"mpmlab", "apache", "nginx", "prometheus", "grafana"}
    r = _compose("config", "-q")
    assert r.returncode != 0 and "MPMLAB_TOKEN" in r.stderr


def test_compose_services_fit_together(compose_config):
    svc = compose_config["services"]
    assert set(svc) == {"mpmlab", "apache", "nginx", "prometheus", "grafana"}
    m = svc["mpmlab"]
    env = m["environment"]
    assert env["MPMLAB_TOKEN"] == TOKEN and "MPMLAB_ALLOW_REMOTE_ATTACH" not in env
    # the attach specs are valid and name the other services, with the same option parser the CLI uses
    import argparse

    from mpmlab.config_file import apply_defaults
    ns = apply_defaults(argparse.Namespace(), env=env)
    assert not ns.allow_remote_attach and ns.host == "0.0.0.0" and ns.token == TOKEN
    # Apache and nginx share the dashboard's network namespace: it attaches to them on loopback, so
    # its traffic panel may aim at them (the loopback rule holds, nothing remote is allowed)
    from mpmcore.sources.attach import parse_spec
    from mpmcore.sources.frames import split_url
    ports = {}
    for spec in ns.attach:
        _, name, url, _ = parse_spec(spec)
        host_port = re.match(r"http://([^/]+)/", split_url(url)[0]).group(1)
        assert host_port.startswith("127.0.0.1:"), spec
        ports[name] = int(host_port.rsplit(":", 1)[1])
    assert ports == {"apache": 8081, "nginx": 8082}
    for name in ("apache", "nginx"):
        assert svc[name]["network_mode"] == "service:mpmlab" and "ports" not in svc[name], name
        assert "mpmlab" in svc[name]["depends_on"]
    httpd = (ROOT / "deploy/apache/httpd.conf").read_text()
    assert re.search(r"^Listen 127\.0\.0\.1:8081$", httpd, re.M)
    assert "listen 127.0.0.1:8082;" in (ROOT / "deploy/nginx/default.conf").read_text()
    # every service has a healthcheck; every image a version tag (no :latest, no bare major)
    for name, s in svc.items():
        assert s.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        image = s["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image else ""
        assert tag and tag != "latest" and re.match(r"v?\d+\.\d+\.\d+", tag), f"{name}: {image}"
    # --profile grafana brings its Prometheus along
    assert svc["prometheus"]["profiles"] == ["prometheus", "grafana"] and svc["grafana"]["profiles"] == ["grafana"]
    for name in ("apache", "nginx", "prometheus", "grafana"):
        for vol in svc[name]["volumes"]:
            src = vol["source"] if isinstance(vol, dict) else vol.split(":", 1)[0]
            assert Path(src).exists(), src
    mounts = {(v["source"] if isinstance(v, dict) else v.split(":")[0]): (v["target"] if isinstance(v, dict)
              else v.split(":")[1]) for v in svc["grafana"]["volumes"]}
    assert mounts[str(ROOT / "deploy/grafana/dashboards")] == "/var/lib/grafana/dashboards"
    assert mounts[str(ROOT / "deploy/grafana/provisioning/datasources")] == "/etc/grafana/provisioning/datasources"
    assert m["build"]["context"] == str(ROOT) and (ROOT / "Dockerfile").is_file()


def test_prometheus_config_scrapes_metrics():
    out = subprocess.run([SYSTEM_PYTHON, "-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"],
                         input=(ROOT / "deploy/prometheus/prometheus.yml").read_text(), capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    cfg = json.loads(out.stdout)
    (job,) = cfg["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["mpmlab:8000"]


# -- the server configurations, run for real with Debian's packages ---------------------------------
DEBIAN_MODULES = Path("/usr/lib/apache2/modules")


@pytest.fixture
def apache_dir():
    """pytest's tmp_path is private to root; Apache's children (www-data) must read the htdocs."""
    d = Path(tempfile.mkdtemp(prefix="mpmlab-deploy-apache-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_deploy_apache_conf_runs_and_attaches(apache_dir):
    """The official image's paths swapped for Debian's; modules Debian compiles in are not loaded."""
    apache2 = need("apache2")
    tmp_path = apache_dir
    port = free_port()
    htdocs = tmp_path / "htdocs"
    htdocs.mkdir()
    (htdocs / "index.html").write_text("hello\n")
    lines = []
    for line in (ROOT / "deploy/apache/httpd.conf").read_text().splitlines():
        m = re.match(r"\s*LoadModule\s+\S+\s+modules/(\S+)", line)
        if m and not (DEBIAN_MODULES / m.group(1)).exists():
            continue  # compiled into Debian's httpd (unixd, log_config)
        line = line.replace('ServerRoot "/usr/local/apache2"', "ServerRoot /usr/lib/apache2")
        line = re.sub(r"^Listen 127\.0\.0\.1:8081$", f"Listen 127.0.0.1:{port}", line)
        line = line.replace("PidFile logs/httpd.pid", f"PidFile {tmp_path}/httpd.pid")
        line = line.replace("TypesConfig conf/mime.types", "TypesConfig /etc/mime.types")
        line = line.replace("/usr/local/apache2/htdocs", str(htdocs))
        line = re.sub(r"^(User|Group) daemon$", r"\1 www-data", line)
        line = line.replace("/proc/self/fd/2", f"{tmp_path}/error.log").replace("/proc/self/fd/1", f"{tmp_path}/access.log")
        lines.append(line)
    conf = tmp_path / "httpd.conf"
    conf.write_text("\n".join(lines) + "\n")
    check = subprocess.run([apache2, "-t", "-f", str(conf)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    subprocess.run([apache2, "-f", str(conf), "-k", "start"], check=True, capture_output=True, timeout=30)
    pidfile = tmp_path / "httpd.pid"
    try:
        wait_for(lambda: pidfile.exists() and answers_200(port, "/server-status?auto"), timeout=15,
                 what="Apache with deploy/apache/httpd.conf")
        source = ApacheSource(f"http://127.0.0.1:{port}/server-status")
        frames = []

        def attached():
            # polled until the children are all up: the HTML tables come from a second request
            frames.append(source.poll())
            f = frames[-1]
            return f.ok and f.workers is not None and f.layout is not None and f.layout.cols == 25 and f  # ThreadsPerChild 25
        try:
            frame = wait_for(attached, timeout=15, interval=0.2, what="the deploy Apache attached")
        except AssertionError:
            raise AssertionError(f"last frame: ok={frames[-1].ok} error={frames[-1].error} "
                                 f"layout={frames[-1].layout}") from None
        assert frame.summary.mpm == "event" and frame.summary.extended_status
    finally:
        if pidfile.exists():
            kill_apache(ProcessIdentity.from_pidfile(pidfile, {"apache2"}), 20)  # TERM; its group SIGKILLed (and a failure) after 20 s


def test_deploy_nginx_conf_runs_and_attaches(tmp_path):
    nginx = need("nginx")
    port = free_port()
    server = (ROOT / "deploy/nginx/default.conf").read_text()
    server = re.sub(r"listen 127\.0\.0\.1:8082;", f"listen 127.0.0.1:{port};", server)
    server = server.replace("/usr/share/nginx/html", str(tmp_path))
    (tmp_path / "index.html").write_text("hello\n")
    # the official image's /etc/nginx/nginx.conf includes conf.d/*.conf inside http { }
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\nhttp {{\n"
        f"  access_log off;\n  client_body_temp_path {tmp_path}/body; proxy_temp_path {tmp_path}/proxy;\n"
        f"  fastcgi_temp_path {tmp_path}/fcgi; uwsgi_temp_path {tmp_path}/uwsgi; scgi_temp_path {tmp_path}/scgi;\n"
        f"{server}\n}}\n")
    args = [nginx, "-e", str(tmp_path / "error.log"), "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")]
    check = subprocess.run(args + ["-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(args + ["-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: answers_200(port, "/nginx_status"), timeout=15, what="nginx with deploy/nginx/default.conf")
        frame = NginxSource(f"http://127.0.0.1:{port}/nginx_status").poll()
        assert frame.ok and frame.connections.active >= 1, frame.error
    finally:
        terminate(proc, 15)


# -- the Dockerfile, without an engine ---------------------------------------------------------------
INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
                "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "MAINTAINER"}


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: comments and parser directives dropped, backslash
    continuations joined, as Docker's parser does. ValueError on an unknown instruction."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # comment lines inside a continuation are dropped
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        if word.upper() not in INSTRUCTIONS:
            raise ValueError(f"unknown Dockerfile instruction {word!r}")
        out.append((word.upper(), rest.strip()))
        buf = ""
    if buf:
        raise ValueError("Dockerfile ends inside a line continuation")
    return out


def test_dockerfile_parses_and_fits_the_context():
    instrs = parse_dockerfile((ROOT / "Dockerfile").read_text())
    froms = [a for i, a in instrs if i == "FROM"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", froms[-1]), froms
    # a Node.js LTS line (even major, 22 or later), pinned to a release
    node = re.fullmatch(r"node:(\d+)\.\d+\.\d+-\S+ AS frontend", froms[0])
    assert node and int(node.group(1)) % 2 == 0 and int(node.group(1)) >= 22, froms[0]
    stages = {a.split()[-1] for a in froms if " AS " in a.upper()}
    for i, a in instrs:
        if i == "COPY":
            parts = shlex.split(a)
            flags = [p for p in parts if p.startswith("--")]
            srcs = [p for p in parts if not p.startswith("--")][:-1]
            frm = [f.split("=", 1)[1] for f in flags if f.startswith("--from=")]
            if frm:
                assert frm[0] in stages, frm
            else:
                for src in srcs:
                    assert (ROOT / src).exists(), f"COPY source {src} is not in the build context"
        if i in ("CMD", "ENTRYPOINT") and a.startswith("["):
            json.loads(a)  # the exec form must be valid JSON, or Docker silently runs it via sh
    ignored = [w for w in (ROOT / ".dockerignore").read_text().split() if not w.startswith("#")]
    assert {".venv", "node_modules", "tests", "bench", "docs", "**/*.png", ".git"} <= set(ignored), ignored
    # layers: the lock is installed before any source is copied, the sources last
    order = [(i, a) for i, a in instrs[[n for n, (i, _) in enumerate(instrs) if i == "FROM"][-1]:]]
    lock_at = next(n for n, (i, a) in enumerate(order) if i == "RUN" and "requirements.lock" in a)
    src_at = [n for n, (i, a) in enumerate(order) if i == "COPY" and re.search(r"\b(mpmcore|mpmlab|templates|static)\b", a)]
    assert src_at and lock_at < min(src_at), order
    assert "--require-hashes" in order[lock_at][1]
    assert not any(i == "COPY" and a.split()[0] == "." for i, a in order), "COPY . . would rebuild every layer"
    runs = " ".join(a for i, a in instrs if i == "RUN")
    assert "npm ci" in runs and "pip install" in runs and "python -m mpmlab.vendor" in runs
    assert "apt-get" not in runs  # no Debian test packages in the image
    assert any(i == "USER" and a != "root" for i, a in instrs)

    # the command line: exec form (mpmlab is PID 1's child under --init and gets SIGTERM), no token
    # on it (MPMLAB_TOKEN comes from the environment, where `ps` does not show it)
    (cmd,) = [json.loads(a) for i, a in instrs if i == "CMD"]
    assert cmd[0] == "mpmlab" and not any("token" in c.lower() for c in cmd), cmd
    from mpmcore.cli import build_parser
    from mpmlab.config_file import apply_defaults
    from mpmlab.main import printed_url, settings_from_args
    args = build_parser().parse_args(["dashboard", *cmd[1:]])
    settings = settings_from_args(apply_defaults(args, env={"MPMLAB_TOKEN": TOKEN}))
    settings.check()
    assert settings.host == "0.0.0.0" and settings.token == TOKEN and not settings.token_generated
    assert TOKEN not in printed_url(settings)  # the container's log never shows it whole
    # without MPMLAB_TOKEN the real command stops at once: one line naming it, status 2
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "mpmcore.cli", *cmd[1:], "--port", str(free_port())], env=env,
                       capture_output=True, text=True, timeout=30, cwd=str(ROOT))
    assert r.returncode == 2 and "MPMLAB_TOKEN" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
