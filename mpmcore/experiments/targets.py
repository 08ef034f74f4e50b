"""Experiment targets: what a target spec means, whether it can run here, the capacity budget in
its own terms (``effective_config``), and starting/stopping it on loopback (``start``).

Targets: ``core:prefork|worker|event`` (the embedded core, ``mpmlab serve`` in a subprocess that
dies with its parent), ``apache:prefork|worker|event`` (Debian's apache2, a daemon stopped by the
pid in its pid file), ``nginx`` and ``lighttpd`` (in the foreground, our children, stopped by pid),
``attach:URL`` (a server someone else runs: traffic goes to it, nothing is started or stopped).

Equivalent content: every real server's document root gets the core's ``/`` page as
``index.html`` (the same bytes, so ``/`` and ``/index.html`` answer the same size) and a
``bytes/N`` file of the core's payload for each ``/bytes/N`` path the plan uses. What a static
server cannot do (``/cpu``, ``/sleep``, ``/unsafe``: the core's handlers) is named in
``EffectiveConfig.not_comparable``, pattern label -> reason, and never compared.

The core target runs through ``mpmcore.launch`` (as the dashboard's core does): Linux sends it
SIGTERM when the experiment's process dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from mpmcore import __version__, realservers
from mpmcore.experiments.model import MPMS, TARGET_KINDS, Budget, EffectiveConfig, Plan, TargetKind, TargetSpec
from mpmcore.procs import ProcessIdentity, stop_pid, terminate
from mpmcore.sources.core import CORE_SHM_PREFIX

__all__ = ["RunningTarget", "TargetError", "available", "check_budget", "effective_config", "not_comparable", "parse_target",
           "plan_paths", "start"]

#: seconds a target has to answer its status page after it was started
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
#: the largest /bytes/N file written into a real server's document root
MAX_STATIC_BYTES = 64 * 1024 * 1024
#: per-target options (``core:event?tls_mode=pre-2.4.7``) and their values
OPTIONS: dict[str, tuple[str, ...]] = {
    "tls_mode": ("current", "pre-2.4.7"),
    # the core's /unsafe forwarded to a FastCGI pool of N processes (UnsafeFastCGIPool N; claim 8)
    "fcgi_pool": ("1", "2", "4", "8"),
    # "off": RequestReadTimeout header=0 body=0, the budget's not applied (claim 7's "without")
    "request_read_timeout": ("budget", "off"),
}
#: RequestReadTimeout with both phases disabled (mod_reqtimeout: a timeout of 0 disables a phase)
RRT_OFF = "header=0 body=0"
#: what the core's handlers do that a static server cannot
_DYNAMIC = {"/cpu": "CPU-heavy handler (/cpu)", "/sleep": "I/O-wait handler (/sleep)",
            "/unsafe": "thread-unsafe module (/unsafe)"}
_STATIC_PATHS = re.compile(r"^/(index\.html)?$|^/bytes/([0-9]+)$|^/health$")
_INSTALL = {"apache": "apt-get install apache2", "nginx": "apt-get install nginx",
            "lighttpd": "apt-get install lighttpd"}
_EXE = {"apache": realservers.APACHE, "nginx": realservers.NGINX, "lighttpd": realservers.LIGHTTPD}


class TargetError(ValueError):
    """A target spec that means nothing, or a target that would not start (the message says why)."""


# -- specs ----------------------------------------------------------------------------------------
def parse_target(text: str) -> TargetSpec:
    """``core:event``, ``apache:worker``, ``nginx``, ``lighttpd``, ``attach:URL``, each optionally
    with ``?option=value&...`` (OPTIONS) -> a TargetSpec; TargetError says what is wrong."""
    text = text.strip()
    if text.startswith("attach:"):
        url = text[len("attach:"):]
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise TargetError(f"{text}: attach needs a URL, e.g. attach:http://127.0.0.1:8080/server-status")
        return TargetSpec(kind="attach", url=url)
    base, _, query = text.partition("?")
    kind, _, mpm = base.partition(":")
    if kind not in TARGET_KINDS or kind == "attach":
        raise TargetError(f"{text!r}: unknown target (core:MPM, apache:MPM, nginx, lighttpd or attach:URL, "
                          f"MPM one of {', '.join(MPMS)})")
    k: TargetKind = kind
    if kind in ("core", "apache"):
        if mpm not in MPMS:
            raise TargetError(f"{text!r}: {kind} needs an MPM: {kind}:prefork, {kind}:worker or {kind}:event")
    elif mpm:
        raise TargetError(f"{text!r}: {kind} takes no MPM")
    options: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        if key not in OPTIONS:
            raise TargetError(f"{text!r}: unknown option {key!r} (known: {', '.join(OPTIONS)})")
        if value not in OPTIONS[key]:
            raise TargetError(f"{text!r}: {key} must be one of {', '.join(OPTIONS[key])}, got {value!r}")
        options[key] = value
    if options.get("tls_mode") == "pre-2.4.7" and (kind, mpm) != ("core", "event"):
        raise TargetError(f"{text!r}: tls_mode=pre-2.4.7 is the embedded core's event MPM only (core:event)")
    if "fcgi_pool" in options and kind != "core":
        raise TargetError(f"{text!r}: fcgi_pool is the embedded core's FastCGI pool for /unsafe (core:MPM only)")
    if "request_read_timeout" in options and kind not in ("core", "apache"):
        raise TargetError(f"{text!r}: request_read_timeout is a core or Apache option")
    return TargetSpec(kind=k, mpm=mpm or None, options=options)


def available(spec: TargetSpec) -> str | None:
    """None when the target can run here; else why not, and how to install what is missing."""
    if spec.kind in ("core", "attach"):
        return None
    exe = _EXE[spec.kind]
    if not (os.path.isabs(exe) and os.access(exe, os.X_OK)) and shutil.which(exe) is None:
        name = "apache2" if spec.kind == "apache" else spec.kind
        return f"{name} is not installed: {_INSTALL[spec.kind]}"
    if spec.kind == "apache" and not Path(f"/usr/lib/apache2/modules/mod_mpm_{spec.mpm}.so").exists():
        return f"apache2 has no mod_mpm_{spec.mpm} module here"
    return None


# -- the budget in each target's terms -----------------------------------------------------------
def _secs(v: float) -> str:
    return str(int(v)) if v == int(v) else f"{v:g}"


def _apache_keepalive(v: float) -> str:
    return str(int(v)) if v == int(v) else f"{round(v * 1000)}ms"


def _rrt_seconds(rrt: str, phase: str) -> float:
    """The first timeout of ``phase`` in a RequestReadTimeout value (header=20-40 -> 20)."""
    from mpmcore.http.protocol import RequestReadTimeout

    r = RequestReadTimeout.parse(rrt)
    return float(r.header_timeout if phase == "header" else r.body_timeout)


def mpm_settings(mpm: str, budget: Budget) -> dict[str, str]:
    """Apache directives (the core's too) that give ``mpm`` the budget."""
    b = budget
    out: dict[str, str]
    if mpm == "prefork":
        out = {"ServerLimit": str(b.slots), "MaxRequestWorkers": str(b.slots), "StartServers": str(b.slots),
               "MinSpareServers": str(min(5, b.slots)), "MaxSpareServers": str(b.slots)}
    else:
        tpc = b.slots // b.processes
        out = {"ServerLimit": str(b.processes), "ThreadLimit": str(max(tpc, 1)), "ThreadsPerChild": str(tpc),
               "MaxRequestWorkers": str(b.slots), "StartServers": str(b.processes),
               "MinSpareThreads": str(min(tpc, b.slots)), "MaxSpareThreads": str(b.slots)}
    out.update({"KeepAlive": "On", "KeepAliveTimeout": _secs(b.keepalive_timeout),
                "MaxKeepAliveRequests": str(b.max_keepalive_requests), "Timeout": _secs(b.timeout),
                "RequestReadTimeout": b.request_read_timeout})
    return out


def peak_connections(plan: Plan | None) -> int:
    """The most connections the plan's generator opens at once (its busiest stage)."""
    from mpmcore.traffic.catalogue import declared_connections, validate_params

    if plan is None:
        return 0
    peak = 0
    for stage in plan.stages:
        n = 0
        for use in stage.mix:
            full = validate_params(use.pattern, {**use.params, "target": "http://127.0.0.1:1/",
                                                 "duration": stage.duration})
            n += declared_connections(use.pattern, full)
        peak = max(peak, n)
    return peak


def connection_limit(budget: Budget, plan: Plan | None) -> int:
    """nginx's and lighttpd's connection limit: high enough never to refuse a connection of the
    plan (as Apache's listen backlog queues them), so the budget is their worker counts only."""
    return max(1024, peak_connections(plan) + budget.slots)


def nginx_settings(budget: Budget, plan: Plan | None = None) -> dict[str, str]:
    b = budget
    conns = connection_limit(b, plan)
    return {"worker_processes": str(b.processes), "worker_connections": str(conns),
            "worker_rlimit_nofile": str(2 * conns + 64),
            "keepalive_timeout": f"{_secs(b.keepalive_timeout)}s",
            "keepalive_requests": str(b.max_keepalive_requests or 1000000),
            "client_header_timeout": f"{_secs(_rrt_seconds(b.request_read_timeout, 'header'))}s",
            "client_body_timeout": f"{_secs(_rrt_seconds(b.request_read_timeout, 'body'))}s",
            "send_timeout": f"{_secs(b.timeout)}s"}


def lighttpd_settings(budget: Budget, plan: Plan | None = None) -> dict[str, str]:
    b = budget
    conns = connection_limit(b, plan)
    return {"server.max-worker": "1", "server.max-connections": str(conns), "server.max-fds": str(2 * conns + 64),
            "server.max-keep-alive-idle": str(max(1, round(b.keepalive_timeout))),
            "server.max-keep-alive-requests": str(b.max_keepalive_requests),
            "server.max-read-idle": str(max(1, round(_rrt_seconds(b.request_read_timeout, "header")))),
            "server.max-write-idle": str(round(b.timeout))}


#: what a real server's settings mean where they differ from Apache's request slots
_NOTES = {
    "nginx": "nginx has no request slots: the budget is its worker processes; worker_connections (per "
             "worker, every open connection, idle kept-alive ones included) is set high enough never to refuse "
             "one of the plan's connections, as Apache's listen backlog queues them",
    "lighttpd": "lighttpd 1.4 is one event-driven process (server.max-worker=1, whatever the budget's "
                "processes); server.max-connections is set high enough never to refuse one of the plan's "
                "connections; its idle timeouts are whole seconds",
}


def plan_paths(plan: Plan | None) -> dict[str, str]:
    """Pattern label -> every request path it asks for (path, asset_path), ``{size}`` filled in."""
    from mpmcore.traffic.catalogue import PATTERNS, parse_size

    out: dict[str, str] = {}
    if plan is None:
        return out
    for stage in plan.stages:
        for use in stage.mix:
            specs = PATTERNS[use.pattern].params
            paths = []
            for key in ("path", "asset_path"):
                if key in specs:
                    p = str(use.params.get(key, specs[key].default))
                    if "{size}" in p:
                        size = use.params.get("size", specs["size"].default if "size" in specs else 0)
                        p = p.replace("{size}", str(parse_size(size)))
                    paths.append(p)
            out[use.name] = " ".join(paths)
    return out


def not_comparable(spec: TargetSpec, plan: Plan | None) -> dict[str, str]:
    """The plan's patterns this target cannot serve as the core does: label -> reason."""
    if spec.kind in ("core", "attach"):
        return {}
    out: dict[str, str] = {}
    name = "apache2" if spec.kind == "apache" else spec.kind
    for label, paths in plan_paths(plan).items():
        for path in paths.split():
            bare = path.split("?", 1)[0]
            if _STATIC_PATHS.match(bare):
                continue
            what = next((v for k, v in _DYNAMIC.items() if bare == k or bare.startswith(k + "/")), None)
            out[label] = (f"{name} serves static files only: it has no {what}" if what else
                          f"{name} serves static files only: {bare} is not one of them")
            break
    return out


def _static_files(plan: Plan | None) -> dict[str, int]:
    """Document-root file name -> size, for the /bytes/N paths of the plan."""
    files: dict[str, int] = {}
    for paths in plan_paths(plan).values():
        for path in paths.split():
            m = _STATIC_PATHS.match(path.split("?", 1)[0])
            if m and m.group(2) is not None and int(m.group(2)) <= MAX_STATIC_BYTES:
                files[f"bytes/{int(m.group(2))}"] = int(m.group(2))
    return files


def _index_page() -> bytes:
    from mpmcore.content.handlers import _INDEX  # the core's "/" page: the real servers serve the same bytes

    return _INDEX


#: the core's /bytes/N payload repeats this (mpmcore.content.handlers; a unit test keeps them equal)
PAYLOAD_PATTERN = b"mpmlab-payload-0123456789abcdefghijklmnopqrstuvwxyz\n"


def _payload(n: int) -> bytes:
    """The bytes the core's /bytes/N answers (without building its 64 MiB buffer here)."""
    return (PAYLOAD_PATTERN * (n // len(PAYLOAD_PATTERN) + 1))[:n]


def _version(spec: TargetSpec) -> str:
    if spec.kind == "core":
        return f"mpmlab {__version__}"
    if spec.kind == "attach":
        return ""
    return realservers.version(spec.kind)


def effective_config(spec: TargetSpec, budget: Budget, plan: Plan | None = None, *, url: str = "",
                     status_url: str | None = None, config_text: str = "", version: str | None = None,
                     ) -> EffectiveConfig:
    """What ``spec`` runs with under ``budget`` (and the plan's extra directives, for the core and
    Apache), without starting anything."""
    extra = dict(plan.server_directives) if plan is not None else {}
    settings: dict[str, str]
    if spec.kind in ("core", "apache"):
        assert spec.mpm is not None
        settings = mpm_settings(spec.mpm, budget)
        settings.update(extra)
        if spec.kind == "core" and spec.options.get("tls_mode") == "pre-2.4.7":
            settings["SSLSyncEventMPM"] = "On"
        if spec.kind == "core" and "fcgi_pool" in spec.options:
            settings["UnsafeFastCGIPool"] = spec.options["fcgi_pool"]
        if spec.options.get("request_read_timeout") == "off":
            settings["RequestReadTimeout"] = RRT_OFF
        if budget.tls and spec.kind == "core":
            settings["TLS"] = "on (self-signed certificate)"
    elif spec.kind == "nginx":
        settings = nginx_settings(budget, plan)
        settings["note"] = _NOTES["nginx"]
    elif spec.kind == "lighttpd":
        settings = lighttpd_settings(budget, plan)
        settings["note"] = _NOTES["lighttpd"]
    else:
        settings = {"note": "an attached server: its own configuration, the budget does not apply"}
    return EffectiveConfig(target=spec.name, kind=spec.kind, mpm=spec.mpm,
                           version=_version(spec) if version is None else version, settings=settings,
                           config_text=config_text, url=url, status_url=status_url,
                           not_comparable=not_comparable(spec, plan))


def check_budget(spec: TargetSpec, budget: Budget, directives: dict[str, str] | None = None) -> str | None:
    """None when the embedded core can take the budget (and the plan's directives) under
    ``spec``'s MPM; else the core's own message (e.g. ``ServerLimit: 4096 is out of range``).
    Other targets are not checked here: their own servers say at start-up."""
    if spec.kind != "core" or spec.mpm is None:
        return None
    from mpmcore.directives import DirectiveError, resolve

    settings = {k: v for k, v in effective_config(spec, budget, version="").settings.items() if k != "TLS"}
    settings.update(directives or {})
    try:
        resolve(spec.mpm, settings)
    except DirectiveError as e:
        return f"{spec.name} cannot take this budget: {e}"
    return None


# -- running targets -----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(url: str, timeout: float = 2.0) -> bool:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class RunningTarget:
    """A started target. ``url``: where traffic goes; ``status_url``/``source_spec``: where the
    recorder reads it (``mpmcore.sources.core.open_source(source_spec)``: the core from its scoreboard); ``pids()``: the roots
    of its process tree; ``config``: what it runs with; ``error_log_path``: its error log (None:
    none to read). ``stop()`` stops it by pid and removes its files; safe to call twice."""

    def __init__(self, spec: TargetSpec, url: str, status_url: str | None, source_spec: str | None,
                 config: EffectiveConfig, error_log_path: Path | None) -> None:
        self.spec = spec
        self.url = url
        self.status_url = status_url
        self.source_spec = source_spec
        self.config = config
        self.error_log_path = error_log_path
        self.threads_per_child: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._master: ProcessIdentity | None = None
        self._dir: Path | None = None
        self._stderr: IO[bytes] | None = None
        self._shm: str | None = None  # the core's scoreboard segment
        self.stopped = False

    @property
    def name(self) -> str:
        return self.spec.name

    def pids(self) -> list[int]:
        if self._proc is not None and self._proc.poll() is None:
            return [self._proc.pid]
        if self._master is not None and self._master.running():
            return [self._master.pid]
        return []

    def alive(self) -> bool:
        return self.spec.kind == "attach" or bool(self.pids())

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        try:
            if self._proc is not None and terminate(self._proc, STOP_TIMEOUT) and self._shm is not None:
                # a core killed after the deadline could not remove its scoreboard: do it for it
                with contextlib.suppress(OSError):
                    os.unlink("/dev/shm" + self._shm)
            if self._master is not None:
                stop_pid(self._master, STOP_TIMEOUT)
        finally:
            if self._stderr is not None:
                self._stderr.close()
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RunningTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_up(target: RunningTarget, url: str, what: str, log: Path | None) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not _answers(url):
        proc = target._proc
        if proc is not None and proc.poll() is not None:
            raise TargetError(f"{what} exited with status {proc.returncode} at start-up: {_tail(log)}")
        if time.monotonic() > deadline:
            raise TargetError(f"{what} did not answer {url} within {START_TIMEOUT:.0f} s: {_tail(log)}")
        time.sleep(0.05)


def _tail(path: Path | None, n: int = 400) -> str:
    if path is None:
        return ""
    try:
        return " ".join(path.read_text(errors="replace")[-n:].split())
    except OSError:
        return ""


def _docroot(d: Path, plan: Plan | None) -> None:
    htdocs = d / "htdocs"
    (htdocs / "bytes").mkdir(parents=True, exist_ok=True)
    (htdocs / "index.html").write_bytes(_index_page())
    (htdocs / "health").write_bytes(b"OK\n")
    for name, size in _static_files(plan).items():
        (htdocs / name).write_bytes(_payload(size))
    for p in (d, htdocs, htdocs / "bytes"):  # the servers' unprivileged workers read it
        p.chmod(0o755)


def _start_core(spec: TargetSpec, budget: Budget, workdir: Path, plan: Plan | None) -> RunningTarget:
    assert spec.mpm is not None
    port = free_port()
    listen = f"127.0.0.1:{port}"
    cfg = effective_config(spec, budget, plan)
    settings = {k: v for k, v in cfg.settings.items() if k != "TLS"}
    cmd = [sys.executable, "-m", "mpmcore.launch", "--parent-pid", str(os.getpid()), "--",
           "serve", "--listen", listen, "--mpm", spec.mpm, "--log-level", "info"]
    for k, v in settings.items():
        cmd += ["--set", f"{k}={v}"]
    url = f"http://{listen}/"
    if budget.tls:
        tls_port = free_port()
        cmd += ["--tls", f"127.0.0.1:{tls_port}"]
        url = f"https://127.0.0.1:{tls_port}/"
    status_url = f"http://{listen}/server-status"
    workdir.mkdir(parents=True, exist_ok=True)
    stderr_path = workdir / f"core-{spec.mpm}-{port}.stderr"
    from mpmcore.master.control import run_dir_for

    error_log = run_dir_for(listen) / "error_log"
    cfg = effective_config(spec, budget, plan, url=url, status_url=status_url,
                           config_text="mpmlab " + " ".join(cmd[cmd.index("serve"):]), version=cfg.version)
    # the scoreboard, not /server-status: a starved worker or prefork cannot answer a status
    # request, its scoreboard still shows every slot (mpmcore/sources/core.py)
    t = RunningTarget(spec, url, status_url, f"{CORE_SHM_PREFIX}{listen}", cfg, error_log)
    t.threads_per_child = 1 if spec.mpm == "prefork" else budget.slots // budget.processes
    from mpmcore.scoreboard import segment_name

    t._shm = segment_name(listen)
    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t._stderr = open(stderr_path, "wb")  # closed by stop()
    t._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=t._stderr, stderr=t._stderr, env=env,
                               start_new_session=True, close_fds=True)
    try:
        _wait_up(t, status_url + "?auto", f"mpmlab serve --mpm {spec.mpm}", stderr_path)
    except BaseException:
        t.stop()
        raise
    return t


def _start_apache(spec: TargetSpec, budget: Budget, workdir: Path, plan: Plan | None) -> RunningTarget:
    assert spec.mpm is not None
    if budget.tls:
        raise TargetError("apache: the budget's tls = true is not supported for a real Apache here yet")
    port = free_port()
    d = realservers.apache_dir(port)
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    _docroot(d, plan)
    cfg0 = effective_config(spec, budget, plan)
    directives = "".join(f"{k} {_apache_keepalive(float(v)) if k == 'KeepAliveTimeout' else v}\n"
                         for k, v in cfg0.settings.items())
    url = f"http://127.0.0.1:{port}/"
    status_url = f"{url}server-status"
    log = d / "logs" / "error.log"
    text = realservers.apache_config(spec.mpm, port, d) + directives
    cfg = effective_config(spec, budget, plan, url=url, status_url=status_url, config_text=text,
                           version=cfg0.version)
    t = RunningTarget(spec, url, status_url, f"apache+{status_url}", cfg, log)
    t._dir = d
    t.threads_per_child = 1 if spec.mpm == "prefork" else budget.slots // budget.processes
    try:
        try:
            realservers.start(spec.mpm, port, directives, index=False)
        except subprocess.CalledProcessError as e:
            err = (e.stderr or b"").decode(errors="replace").strip().splitlines()
            raise TargetError(f"apache2 ({spec.mpm}) refused to start: {err[-1] if err else e}") from None
        _wait_up(t, status_url + "?auto", f"apache2 ({spec.mpm})", log)
        t._master = ProcessIdentity.from_pidfile(realservers.pidfile(port), {"apache2"})
        if t._master is None:
            raise TargetError(f"apache2 ({spec.mpm}) answers on {port} but wrote no pid file")
    except BaseException:
        if t._master is None:
            realservers.signal_stop(port)
            with contextlib.suppress(Exception):
                t._master = ProcessIdentity.from_pidfile(realservers.pidfile(port), {"apache2"})
        t.stop()
        raise
    return t


def _start_foreground(spec: TargetSpec, budget: Budget, workdir: Path, plan: Plan | None) -> RunningTarget:
    if budget.tls:
        raise TargetError(f"{spec.kind}: the budget's tls = true is not supported for {spec.kind} here yet")
    port = free_port()
    d = Path(tempfile.mkdtemp(prefix=f"mpmlab-{spec.kind}-"))
    _docroot(d, plan)
    cfg0 = effective_config(spec, budget, plan)
    settings = {k: v for k, v in cfg0.settings.items() if k != "note"}
    url = f"http://127.0.0.1:{port}/"
    exe = shutil.which(_EXE[spec.kind]) or _EXE[spec.kind]
    log = d / "error.log"
    if spec.kind == "nginx":
        text = realservers.nginx_config(port, d, settings)
        status_url = f"{url}nginx_status"
        source = f"nginx+{status_url}"
        cmd = [exe, "-e", str(log), "-p", str(d), "-c", str(d / "server.conf"), "-g", "daemon off;"]
    else:
        text = realservers.lighttpd_config(port, d, settings)
        status_url = f"{url}server-status"
        source = f"lighttpd+{status_url}"  # mpmcore.sources.lighttpd: its ?auto, read as lighttpd means it
        cmd = [exe, "-D", "-f", str(d / "server.conf")]
    (d / "server.conf").write_text(text)
    cfg = effective_config(spec, budget, plan, url=url, status_url=status_url, config_text=text,
                           version=cfg0.version)
    t = RunningTarget(spec, url, status_url, source, cfg, log)
    t._dir = d
    t.threads_per_child = 1
    t._stderr = open(d / "stderr.log", "wb")  # closed by stop()
    # its own session: a Ctrl-C in the terminal is the experiment's to handle (it stops the target by pid)
    t._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=t._stderr, stderr=subprocess.STDOUT,
                               close_fds=True, start_new_session=True)
    try:
        _wait_up(t, status_url + ("?auto" if spec.kind == "lighttpd" else ""), exe, d / "stderr.log")
    except BaseException:
        t.stop()
        raise
    return t


def start(spec: TargetSpec, budget: Budget, workdir: str | os.PathLike[str], plan: Plan | None = None,
          ) -> RunningTarget:
    """Start ``spec`` with ``budget`` (and the plan's content and directives); returns once its
    status page answers. TargetError when it cannot run here or would not start."""
    why = available(spec)
    if why is not None:
        raise TargetError(why)
    wd = Path(workdir)
    if spec.kind == "core":
        return _start_core(spec, budget, wd, plan)
    if spec.kind == "apache":
        return _start_apache(spec, budget, wd, plan)
    if spec.kind in ("nginx", "lighttpd"):
        return _start_foreground(spec, budget, wd, plan)
    assert spec.url is not None
    parts = urlsplit(spec.url)
    base = f"{parts.scheme}://{parts.netloc}/"
    cfg = effective_config(spec, budget, plan, url=base, status_url=spec.url, version="")
    return RunningTarget(spec, base, spec.url, spec.url, cfg, None)


@contextlib.contextmanager
def running(spec: TargetSpec, budget: Budget, workdir: str | os.PathLike[str],
            plan: Plan | None = None) -> Iterator[RunningTarget]:
    t = start(spec, budget, workdir, plan)
    try:
        yield t
    finally:
        t.stop()

