"""The master: binds once, forks children, keeps the spares, restarts, and switches MPM.

Read it top to bottom like gunicorn's arbiter: ``run()`` sets up, then loops over
wait -> signals -> control commands -> reap -> one-second maintenance, until told to stop. It is
single-threaded, so fork() is safe, and it never serves a request itself.

Signals, as Apache's: TERM (and INT) stop, HUP restart, USR1 graceful restart, WINCH graceful stop.
The same actions, and the live MPM switch Apache does not have, come over a Unix control socket
(``mpmlab ctl``).
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpmcore import __version__
from mpmcore import scoreboard as sb
from mpmcore.directives import DIRECTIVES, MPMS, Config, DirectiveError, canonical, resolve
from mpmcore.errorlog import ErrorLog
from mpmcore.mpm.common import ChildEnv, Listener
from mpmcore.procs import MASTER_SIGNALS

TICK = 1.0  # Apache's one-second maintenance interval
MAX_SPAWN_RATE = 32  # Apache's MAX_SPAWN_RATE
HOLD_OFF_TICKS = 10  # no exponential spawning for this many ticks after a graceful restart
HARD_STOP_TERM_SECONDS = 9.0  # TERM, then KILL after ~9 s (ap_reclaim_child_processes)
MEM_SAMPLE_SECONDS = 2.0  # PSS/RSS of each child from /proc
CTL_MAX_REQUEST = 1 << 20  # a control request larger than this is refused
CTL_READ_TIMEOUT = 5.0

EXIT_STOP, EXIT_ERROR = 0, 1
POOL_SLOTS = int(DIRECTIVES["UnsafeFastCGIPool"].max)  # process slots kept at the top for the FastCGI pool


def runtime_root() -> Path:
    return Path(tempfile.gettempdir()) / "mpmlab"


def run_dir_for(listen: str) -> Path:
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


@dataclass
class Child:
    pid: int
    slot: int
    generation: int
    mpm: str
    threads: int
    started: float = field(default_factory=time.monotonic)
    quiescing: bool = False


def _read_smaps_rollup(pid: int) -> tuple[int, int]:
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith(b"Rss:"):
                    rss = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return pss, rss


class Master:
    def __init__(self, listen: str = "127.0.0.1:8080", mpm: str = "event", settings: dict[str, Any] | None = None,
                 tls_listen: str | None = None, tls_cert: str | None = None, tls_key: str | None = None,
                 echo_log: bool = True, log_level: str = "info"):
        self.listen = listen
        self.tls_listen = tls_listen
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.settings: dict[str, Any] = {canonical(k): v for k, v in (settings or {}).items()}
        self.config: Config = resolve(mpm, self.settings)  # raises DirectiveError before anything starts
        self.echo_log, self.log_level = echo_log, log_level
        self.children: dict[int, Child] = {}
        self.slot_owner: dict[int, int] = {}  # process slot -> pid written in its record
        self.generation = 0
        self.signals: list[int] = []
        self.running = False
        self.stopping_gracefully = False
        self.graceful_deadline = 0.0  # GracefulShutdownTimeout during a graceful stop (0 = none)
        self.spawn_rate = 1
        self.hold_off = 0
        self.maxclients_reported = False
        self.reaped_since_tick = False
        self.remaining_to_start = 0
        self.last_mem_sample = 0.0
        self.exit_code = EXIT_STOP
        self.run_dir = run_dir_for(listen)
        self.listeners: list[Listener] = []
        self.scoreboard: sb.Scoreboard | None = None
        self.pool: dict[int, int] = {}  # FastCGI pool for /unsafe: pid -> process slot
        self.retiring_pool: dict[int, int] = {}  # pool processes told to go (pool made smaller)
        self.fcgi_sock: socket.socket | None = None
        self.fcgi_path = self.run_dir / "fcgi.sock"

    # ---------------------------------------------------------------------------------------
    # set-up and tear-down
    def log(self, level: str, message: str, module: str | None = None) -> None:
        self.errorlog(module or f"mpm_{self.config.mpm}", level, message)

    def _bind(self, listen: str) -> socket.socket:
        host, port = parse_listen(listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.config["SendBufferSize"]:  # accepted sockets inherit it, as in Apache
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config["SendBufferSize"])
        s.bind((host, port))
        s.listen(self.config["ListenBacklog"])
        s.setblocking(False)
        os.set_inheritable(s.fileno(), True)
        return s

    def capacity(self) -> tuple[int, int]:
        """The scoreboard is sized for the largest ServerLimit and ThreadLimit any MPM takes with
        the user's settings, so a live switch fits without re-creating it."""
        procs = threads = 1
        for m in MPMS:
            carried = {k: v for k, v in self.settings.items() if DIRECTIVES[k].applies_to(m)}
            try:
                c = resolve(m, carried)
            except DirectiveError:
                c = resolve(m, {})
            procs = max(procs, c["ServerLimit"])
            threads = max(threads, c["ThreadLimit"])
        # plus room at the top for the largest FastCGI pool (UnsafeFastCGIPool) a restart may ask for
        return procs + POOL_SLOTS, threads

    def setup(self) -> None:
        _raise_nofile()
        from mpmcore.content.handlers import warm_up
        warm_up()  # shared by every child through fork()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.errorlog = ErrorLog(str(self.run_dir / "error_log"), echo=self.echo_log, level=self.log_level)
        pidfile = self.run_dir / "master.pid"
        if pidfile.exists():
            try:
                old = int(pidfile.read_text().strip() or 0)
            except ValueError:
                old = 0
            if old and old != os.getpid() and sb._pid_alive(old) and _is_mpmlab(old):
                raise RuntimeError(f"a master for {self.listen} already runs (pid {old})")
        self.listeners = [Listener(self._bind(self.listen))]
        if self.tls_listen:
            from mpmcore import tls
            cert, key = self.tls_cert, self.tls_key
            if not cert:
                cert, key = tls.make_self_signed(str(self.run_dir), parse_listen(self.tls_listen)[0])
                self.tls_cert, self.tls_key = cert, key
                self.log("notice", f"made a self-signed certificate for the TLS listener: {cert}", "ssl")
            self.listeners.append(Listener(self._bind(self.tls_listen), tls.server_context(cert, key)))
        procs, threads = self.capacity()
        self.scoreboard = sb.Scoreboard.create(sb.segment_name(self.listen), procs, threads,
                                               log=lambda m: self.log("warn", m, "core"))
        self.scoreboard.update_global(listen=self.listen, tls_listen=self.tls_listen or "")
        pidfile.write_text(f"{os.getpid()}\n")
        # control socket
        ctl_path = self.run_dir / "ctl.sock"
        try:
            ctl_path.unlink()
        except FileNotFoundError:
            pass
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ctl.bind(str(ctl_path))
        os.chmod(ctl_path, 0o600)
        self.ctl.listen(16)
        self.ctl.setblocking(False)
        (self.run_dir / "info.json").write_text(json.dumps({
            "listen": self.listen, "tls_listen": self.tls_listen, "pid": os.getpid(),
            "scoreboard": self.scoreboard.name, "error_log": str(self.run_dir / "error_log"),
            "control": str(ctl_path), "version": __version__}))
        # signals: handlers only queue the number; the loop acts (set_wakeup_fd wakes it)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        for s in MASTER_SIGNALS:  # the same set _fork blocks across fork
            signal.signal(s, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.signals.append(signum)

    def teardown(self) -> None:
        signal.set_wakeup_fd(-1)
        for lst in self.listeners:
            try:
                lst.sock.close()
            except OSError:
                pass
        try:
            self.ctl.close()
            (self.run_dir / "ctl.sock").unlink()
        except (OSError, AttributeError):
            pass
        if self.fcgi_sock is not None:
            self.fcgi_sock.close()
            try:
                self.fcgi_path.unlink()
            except FileNotFoundError:
                pass
        if self.scoreboard is not None:
            self.scoreboard.unlink()
        for name in ("master.pid", "info.json"):
            try:
                (self.run_dir / name).unlink()
            except FileNotFoundError:
                pass

    # ---------------------------------------------------------------------------------------
    # the main loop
    def run(self) -> int:
        try:
            self.setup()
        except Exception as e:
            if hasattr(self, "errorlog"):
                self.log("emerg", f"could not start: {e}", "core")
            if self.scoreboard is not None:
                self.scoreboard.unlink()
            raise
        try:
            self.new_generation(first=True)
            self.log("notice", f"mpmlab/{__version__} ({self.config.mpm}) configured -- resuming normal operations "
                               f"on {self.listen}" + (f" and https://{self.tls_listen}" if self.tls_listen else ""), "core")
            for w in self.config.warnings:
                self.log("warn", w)
            self.running = True
            next_tick = time.monotonic() + TICK
            while self.running:
                self.wait(next_tick)
                self.handle_signals()
                if not self.running:
                    break
                self.reap()
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + TICK
                    if self.stopping_gracefully:
                        if not self.children:
                            self.running = False
                        elif self.graceful_deadline and now > self.graceful_deadline:
                            self.log("warn", "GracefulShutdownTimeout reached, stopping the remaining children")
                            self.running = False
                    elif self.reaped_since_tick:
                        self.reaped_since_tick = False  # as Apache: no maintenance on a tick a child exited
                    else:
                        self.maintenance()
                    if now - self.last_mem_sample >= MEM_SAMPLE_SECONDS:
                        self.sample_memory()
                        self.last_mem_sample = now
            self.stop_children()
        except Exception:
            self.log("crit", "master failed: " + traceback.format_exc().replace("\n", " | "), "core")
            self.stop_children()
            self.exit_code = EXIT_ERROR
        finally:
            self.log("notice", "shutdown complete", "core")
            self.teardown()
        return self.exit_code

    def wait(self, until: float) -> None:
        timeout = max(0.0, until - time.monotonic())
        if self.signals:
            timeout = 0
        try:
            ready, _, _ = select.select([self.wake_r, self.ctl], [], [], timeout)
        except InterruptedError:
            return
        if self.wake_r in ready:
            try:
                while os.read(self.wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        if self.ctl in ready:
            self.handle_control()

    def handle_signals(self) -> None:
        while self.signals:
            s = self.signals.pop(0)
            if s == signal.SIGCHLD:
                continue  # reap() runs right after
            if s in (signal.SIGTERM, signal.SIGINT):
                self.log("notice", f"caught {signal.Signals(s).name}, shutting down", "core")
                self.running = False
            elif s == signal.SIGHUP:
                self.log("notice", "SIGHUP received.  Attempting to restart", "core")
                self.restart(graceful=False)
            elif s == signal.SIGUSR1:
                self.log("notice", "Graceful restart requested, doing restart", "core")
                self.restart(graceful=True)
            elif s == signal.SIGWINCH:
                self.log("notice", "caught SIGWINCH, shutting down gracefully", "core")
                self.graceful_stop()

    # ---------------------------------------------------------------------------------------
    # children
    def _fork(self, what: str, module: str, body: Callable[[], int]) -> int | None:
        """fork() ``what`` (a child, a pool process): it runs ``body`` (its exit status) and exits;
        the pid, or None when fork failed. The master's signals are blocked across the fork (see procs.MASTER_SIGNALS);
        ``body`` unblocks them once its handlers are set."""
        old = signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
        try:
            pid = os.fork()
        except OSError as e:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
            self.log("alert", f"fork: Unable to fork a new {what}: {e}", module)
            return None
        if pid:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
            return pid
        code = 1

        def thread_died(args) -> None:
            # A dead listener or worker thread would leave the child up but stuck (a frozen
            # not_accepting, parked connections never served): log it and end the child, as a
            # crash; the master reaps it and starts another.
            try:
                tb = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
                self.errorlog(module, "crit", f"{what} thread {args.thread.name if args.thread else '?'} died: "
                                              + tb.replace("\n", " | "))
            finally:
                os._exit(1)

        try:
            threading.excepthook = thread_died
            _die_with_parent()
            signal.set_wakeup_fd(-1)
            for fd in (self.wake_r, self.wake_w):
                os.close(fd)
            self.ctl.close()
            code = body()
        except BaseException:
            try:
                self.errorlog(module, "error", f"{what} failed: " + traceback.format_exc().replace("\n", " | "))
            except Exception:
                pass
        finally:
            os._exit(code)

    def spawn(self, slot: int) -> int | None:
        """fork() a child of the current MPM into process slot ``slot``."""
        cfg = self.config
        threads = 1 if cfg.mpm == "prefork" else cfg["ThreadsPerChild"]
        pid = self._fork("child", f"mpm_{cfg.mpm}", lambda: self._child_main(slot, cfg))
        if pid is None:
            return None
        self.children[pid] = Child(pid, slot, self.generation, cfg.mpm, threads)
        self.slot_owner[slot] = pid
        self.scoreboard.update_proc(slot, pid=pid, generation=self.generation, mpm=sb.MPM_IDS[cfg.mpm],
                                    kind=sb.KIND_CHILD, quiescing=0, threads=threads, start_time=time.time(),
                                    pss_kb=0, rss_kb=0)
        return pid

    def _child_main(self, slot: int, cfg: Config) -> int:
        # What the child inherited lives as long as it does: keep the collector from scanning it
        # again and again (and from touching, so copying, the pages it shares with the master).
        gc.freeze()
        from mpmcore.content.server import make_handler
        from mpmcore.mpm import MPM_MODULES
        env = ChildEnv(scoreboard=self.scoreboard, proc=slot, generation=self.generation, config=cfg,
                       listeners=self.listeners, log=self.errorlog, make_handler=make_handler,
                       vhost=self.listen,
                       fcgi_socket=str(self.fcgi_path) if cfg["UnsafeFastCGIPool"] else None)
        return MPM_MODULES[cfg.mpm].run_child(env)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.pool or pid in self.retiring_pool:
                self._pool_reaped(pid, status)
                continue
            child = self.children.pop(pid, None)
            if child is None:
                continue
            self.reaped_since_tick = True
            if os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                if not (sig == signal.SIGTERM and child.quiescing):
                    self.log("notice", f"child pid {pid} exit signal {signal.Signals(sig).name} ({sig})", "core")
            elif os.WEXITSTATUS(status) not in (0,):
                self.log("error", f"child pid {pid} exited with status {os.WEXITSTATUS(status)}", "core")
            self._clean_slots(child)
            if self.remaining_to_start and not self.stopping_gracefully and self.running:
                free = self.free_slots()
                if free:
                    self.spawn(free[0])
                    self.remaining_to_start -= 1

    def _clean_slots(self, child: Child) -> None:
        """A dead child's thread slots may still say what it was doing (killed hard): clear them.
        Only slots that still carry its pid: a squatter may own the others by now."""
        s = self.scoreboard
        for t in range(s.thread_capacity):
            rec = s.worker(child.slot, t)
            if rec.pid == child.pid and rec.status != sb.DEAD:
                s.slot(child.slot, t).release(sb.DEAD)
        if self.slot_owner.get(child.slot) == child.pid:
            del self.slot_owner[child.slot]
            s.clear_proc(child.slot)
            s.clear_child(child.slot)

    def signal_child(self, child: Child, sig: int) -> None:
        try:
            os.kill(child.pid, sig)
        except ProcessLookupError:
            pass

    def quiesce(self, child: Child) -> None:
        """Tell one child to finish gracefully (Apache's pod / AP_SIG_GRACEFUL)."""
        if child.quiescing:
            return
        child.quiescing = True
        if self.slot_owner.get(child.slot) == child.pid:
            self.scoreboard.update_proc(child.slot, quiescing=1)
        self.signal_child(child, signal.SIGUSR1)

    # ---------------------------------------------------------------------------------------
    # slots and maintenance
    def current_children(self) -> list[Child]:
        return [c for c in self.children.values() if c.generation == self.generation and not c.quiescing]

    def max_children(self) -> int:
        return self.config.max_children

    def free_slots(self) -> list[int]:
        """Process slots a new child of the current MPM may take, lowest first (SPEC 3-5)."""
        cfg = self.config
        occupied = {c.slot for c in self.children.values()} | set(self.pool.values())
        active = len(self.current_children())
        if cfg.mpm == "prefork":
            limit = cfg["MaxRequestWorkers"]
            return [i for i in range(limit) if i not in occupied]
        if active >= self.max_children():
            return []
        if cfg.mpm == "worker":
            # worker squats: a slot held only by children that are on their way out (same MPM) is
            # free; the new child reuses its thread slots as the old threads let them go.
            out = []
            for i in range(self.max_children()):
                holders = [c for c in self.children.values() if c.slot == i]
                if all(c.mpm == "worker" and (c.quiescing or c.generation != self.generation) for c in holders):
                    out.append(i)
            return out
        # event: no squatting; stopping children count against ServerLimit
        return [i for i in range(cfg["ServerLimit"]) if i not in occupied]

    # ---------------------------------------------------------------------------------------
    # the FastCGI pool for /unsafe (UnsafeFastCGIPool N): N single-threaded processes, shown in
    # the scoreboard as process slots of their own kind, taken from the top of the scoreboard
    def ensure_pool(self) -> None:
        want = self.config["UnsafeFastCGIPool"]
        if want and self.fcgi_sock is None:
            try:
                self.fcgi_path.unlink()
            except FileNotFoundError:
                pass
            self.fcgi_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.fcgi_sock.bind(str(self.fcgi_path))
            os.chmod(self.fcgi_path, 0o600)
            self.fcgi_sock.listen(128)
        while len(self.pool) > want:
            pid = max(self.pool, key=lambda p: self.pool[p])
            self.signal_child(Child(pid, self.pool[pid], 0, "fcgi", 1), signal.SIGTERM)
            self.retiring_pool[pid] = self.pool.pop(pid)
        busy = {c.slot for c in self.children.values()} | set(self.pool.values())
        slot = self.scoreboard.proc_capacity - 1
        while len(self.pool) < want and slot >= 0:
            if slot not in busy:
                self._spawn_pool(slot)
            slot -= 1

    def _spawn_pool(self, slot: int) -> None:
        def body() -> int:
            for lst in self.listeners:
                lst.sock.close()
            from mpmcore.content.fcgi import run_pool_process
            return run_pool_process(self.scoreboard, slot, self.generation, self.fcgi_sock)
        pid = self._fork("pool process", "proxy_fcgi", body)
        if pid is None:
            return
        self.pool[pid] = slot
        self.scoreboard.update_proc(slot, pid=pid, generation=self.generation, mpm=0, kind=sb.KIND_FCGI,
                                    quiescing=0, threads=1, start_time=time.time(), pss_kb=0, rss_kb=0)

    def _pool_reaped(self, pid: int, status: int) -> None:
        slot = self.pool.pop(pid, None)
        if slot is None:
            slot = self.retiring_pool.pop(pid)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) != signal.SIGTERM:
            self.log("notice", f"FastCGI pool process {pid} exit signal {signal.Signals(os.WTERMSIG(status)).name}",
                     "proxy_fcgi")
        rec = self.scoreboard.worker(slot, 0)
        if rec.pid == pid:
            self.scoreboard.slot(slot, 0).release(sb.DEAD)
        self.scoreboard.clear_proc(slot)

    def idle_count(self) -> int:
        """Idle for maintenance: prefork counts children, worker/event threads, in S or _. Thread
        slots a young child has not claimed yet count as S, as Apache's parent marks them. An event
        child that stopped accepting has no spare threads (event.c counts ``!ps->not_accepting``
        children only): no new client can reach them, so more children are started."""
        s = self.scoreboard
        idle = 0
        for c in self.current_children():
            if c.mpm == "event":
                rec = s.children[c.slot]
                if rec.pid == c.pid and rec.not_accepting:
                    continue
            for t in range(c.threads):
                rec = s.worker(c.slot, t)
                if rec.pid != c.pid:
                    idle += 1  # not started yet: STARTING
                elif rec.status in (sb.STARTING, sb.READY):
                    idle += 1
        return idle

    def maintenance(self) -> None:
        self.ensure_pool()
        cfg = self.config
        idle = self.idle_count()
        if cfg.mpm == "prefork":
            lo_name, hi_name, unit = "MinSpareServers", "MaxSpareServers", "children"
        else:
            lo_name, hi_name, unit = "MinSpareThreads", "MaxSpareThreads", "threads"
        lo, hi = cfg[lo_name], cfg[hi_name]
        if idle > hi:
            victim = self._pick_idle_victim()
            if victim is not None:
                self.quiesce(victim)
                # mpmlab's own line (Apache logs no single spawn or stop): the dashboard shows it
                self.log("info", f"maintenance: stopping idle child pid {victim.pid} in slot {victim.slot} "
                                 f"({idle} idle {unit} > {hi_name} {hi})")
            self.spawn_rate = 1
            return
        if idle < lo:
            free = self.free_slots()
            if not free:
                if not self.maxclients_reported:
                    code = "AH00161" if cfg.mpm == "prefork" else "AH00286"
                    self.log("error", f"{code}: server reached MaxRequestWorkers setting, consider raising the "
                                      "MaxRequestWorkers setting")
                    self.maxclients_reported = True
                self.spawn_rate = 1
                return
            n = min(self.spawn_rate, len(free))
            if self.spawn_rate >= 8:
                if cfg.mpm == "prefork":
                    self.log("info", f"AH00162: server seems busy, (you may need to increase StartServers, or "
                                     f"Min/MaxSpareServers), spawning {n} children, there are {idle} idle, and "
                                     f"{len(self.current_children())} total children")
                else:
                    self.log("info", f"AH00486: server seems busy, (you may need to increase StartServers, "
                                     f"ThreadsPerChild or Min/MaxSpareThreads), spawning {n} children, there are "
                                     f"around {idle} idle threads, {len(self.current_children())} active children, "
                                     f"and {len(self.children) - len(self.current_children())} children that are "
                                     "shutting down")
            pids = [pid for pid in (self.spawn(slot) for slot in free[:n]) if pid]
            if pids:  # a failed fork has logged its own alert
                self.log("info", f"maintenance: spawned {len(pids)} child{'ren' if len(pids) != 1 else ''} "
                                 f"(pid {', '.join(map(str, pids))}; {idle} idle {unit} < {lo_name} {lo})")
            if self.hold_off > 0:
                self.hold_off -= 1
            elif self.spawn_rate < MAX_SPAWN_RATE:
                self.spawn_rate *= 2
            return
        self.spawn_rate = 1

    def _pick_idle_victim(self) -> Child | None:
        """prefork: the highest idle child. worker/event: the highest current child (Apache stops
        the last one it counted)."""
        s = self.scoreboard
        best = None
        for c in self.current_children():
            if c.generation != self.generation:
                continue
            if c.mpm == "prefork":
                if s.worker(c.slot, 0).pid == c.pid and s.worker(c.slot, 0).status == sb.READY:
                    if best is None or c.slot > best.slot:
                        best = c
            elif best is None or c.slot > best.slot:
                best = c
        return best

    def sample_memory(self) -> None:
        for c in list(self.children.values()):
            pss, rss = _read_smaps_rollup(c.pid)
            if self.slot_owner.get(c.slot) == c.pid:
                self.scoreboard.update_proc(c.slot, pss_kb=pss, rss_kb=rss, mem_time=time.time())
        ru_self = os.times()
        self.scoreboard.update_global(parent_cpu_user=ru_self.user, parent_cpu_system=ru_self.system,
                                      children_cpu_user=ru_self.children_user,
                                      children_cpu_system=ru_self.children_system)

    # ---------------------------------------------------------------------------------------
    # generations: start, graceful restart, hard restart, switch, stops
    def _publish_config(self) -> None:
        cfg = self.config
        self.scoreboard.update_global(
            mpm=sb.MPM_IDS[cfg.mpm], server_limit=cfg["ServerLimit"], thread_limit=cfg.values.get("ThreadLimit", 1),
            threads_per_child=cfg.values.get("ThreadsPerChild", 1), max_request_workers=cfg["MaxRequestWorkers"],
            running_generation=self.generation, config_generation=self.generation + 1)

    def new_generation(self, first: bool = False) -> None:
        if not first:
            self.generation += 1
        self._publish_config()
        self.ensure_pool()
        self.spawn_rate = 1
        self.maxclients_reported = False
        free = self.free_slots()
        n = self.config["StartServers"]
        for slot in free[:n]:
            self.spawn(slot)
        self.remaining_to_start = max(0, n - len(free))

    def check_limits(self, cfg: Config) -> None:
        """ServerLimit/ThreadLimit beyond what the scoreboard was sized for need a full restart."""
        s = self.scoreboard
        room = s.proc_capacity - POOL_SLOTS
        if cfg["ServerLimit"] > room:
            raise DirectiveError("ServerLimit", f"{cfg['ServerLimit']} exceeds the scoreboard's {room} "
                                 "process slots allocated at start; a change this large needs a full restart "
                                 "(mpmlab ctl restart --set ServerLimit=...)")
        tl = cfg.values.get("ThreadLimit", 1)
        if tl > s.thread_capacity:
            raise DirectiveError("ThreadLimit", f"{tl} exceeds the scoreboard's {s.thread_capacity} thread slots "
                                 "per process allocated at start; this needs a full restart "
                                 "(mpmlab ctl restart --set ThreadLimit=...)")

    def restart(self, graceful: bool, mpm: str | None = None, settings: dict[str, Any] | None = None,
                replace: bool = False) -> Config:
        """Graceful or hard restart into a new generation, optionally of another MPM (the switch)."""
        mpm = mpm or self.config.mpm
        settings = {canonical(k): v for k, v in (settings or {}).items()}
        merged = {} if replace else dict(self.settings)
        merged.update(settings)
        # Settings made for another MPM wait, silently, for a switch back to it; new ones that do
        # not apply to ``mpm`` get resolve()'s warning.
        carried = {k: v for k, v in merged.items() if DIRECTIVES[k].applies_to(mpm) or k in settings}
        cfg = resolve(mpm, carried)  # DirectiveError leaves everything as it was
        if graceful:
            self.check_limits(cfg)
        old_mpm = self.config.mpm
        self.settings, self.config = merged, cfg
        if graceful:
            for c in list(self.children.values()):
                self.quiesce(c)
            self.hold_off = HOLD_OFF_TICKS
            self.new_generation()
        else:
            self.stop_children()
            procs, threads = self.capacity()
            if procs > self.scoreboard.proc_capacity or threads > self.scoreboard.thread_capacity:
                # re-create the segment with the new size (readers see `superseded` and re-attach)
                self.log("notice", f"re-creating the scoreboard for {procs} x {threads} slots", "core")
                old = self.scoreboard
                old.unlink()
                self.scoreboard = sb.Scoreboard.create(old.name, procs, threads)
                self.scoreboard.update_global(listen=self.listen, tls_listen=self.tls_listen or "")
                old.close()
            else:
                self.scoreboard.reset_counters()
                for i in range(self.scoreboard.proc_capacity):
                    self.scoreboard.clear_proc(i)
                    self.scoreboard.clear_child(i)
            self.scoreboard.update_global(restart_time=time.time())
            self.slot_owner.clear()
            self.new_generation()
        what = "switched" if mpm != old_mpm else ("graceful restart" if graceful else "restart")
        self.log("notice", f"{what}: generation {self.generation} runs {mpm}"
                           + (f" (was {old_mpm})" if mpm != old_mpm else ""), "core")
        for w in cfg.warnings:
            self.log("warn", w)
        return cfg

    def _stop_pool(self) -> None:
        for pid, slot in list(self.pool.items()):
            self.signal_child(Child(pid, slot, 0, "fcgi", 1), signal.SIGTERM)
            self.retiring_pool[pid] = self.pool.pop(pid)
        deadline = time.monotonic() + HARD_STOP_TERM_SECONDS
        while self.retiring_pool and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.01)
        for pid in list(self.retiring_pool):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while self.retiring_pool and time.monotonic() < deadline + 5:
            self.reap()
            time.sleep(0.01)

    def graceful_stop(self) -> None:
        """WINCH: close the listeners (new clients are refused), let children finish, then exit."""
        self.stopping_gracefully = True
        for lst in self.listeners:
            try:
                lst.sock.close()
            except OSError:
                pass
        for c in list(self.children.values()):
            self.quiesce(c)
        t = self.config["GracefulShutdownTimeout"]
        self.graceful_deadline = time.monotonic() + t if t else 0.0

    def stop_children(self) -> None:
        """TERM every child and the FastCGI pool, KILL what is left after HARD_STOP_TERM_SECONDS;
        reap them all. (Shutdown, and a hard restart: there the pool's rows are cleared, or its
        segment replaced, and new_generation() starts a new pool that claims fresh rows.)"""
        for c in list(self.children.values()):
            c.quiescing = True
            self.signal_child(c, signal.SIGTERM)
        self._stop_pool()
        deadline = time.monotonic() + HARD_STOP_TERM_SECONDS
        killed = False
        while self.children:
            self.reap()
            if not self.children:
                break
            if time.monotonic() > deadline and not killed:
                for c in list(self.children.values()):
                    self.log("warn", f"child process {c.pid} still did not exit, sending a SIGKILL", "core")
                    self.signal_child(c, signal.SIGKILL)
                killed = True
            time.sleep(0.01)

    # ---------------------------------------------------------------------------------------
    # control socket: one JSON request, one JSON answer, per connection
    def handle_control(self) -> None:
        while True:
            try:
                conn, _ = self.ctl.accept()
            except (BlockingIOError, InterruptedError):
                return
            with conn:
                conn.settimeout(CTL_READ_TIMEOUT)
                try:
                    data = b""
                    while not data.endswith(b"\n") and len(data) < CTL_MAX_REQUEST:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    try:
                        req = json.loads(data or b"null")
                        if not isinstance(req, dict):
                            raise ValueError("a control request is a JSON object with a 'cmd'")
                        answer = self.control(req)
                    except DirectiveError as e:
                        answer = {"ok": False, "error": str(e), "directive": e.directive}
                    except (ValueError, KeyError, TypeError) as e:
                        answer = {"ok": False, "error": str(e)}
                    conn.sendall(json.dumps(answer).encode() + b"\n")
                except OSError:
                    pass

    def status(self) -> dict[str, Any]:
        return {
            "ok": True, "pid": os.getpid(), "listen": self.listen, "tls_listen": self.tls_listen,
            "mpm": self.config.mpm, "generation": self.generation, "config": self.config.to_dict(),
            "settings": {k: str(v) for k, v in self.settings.items()},
            "scoreboard": self.scoreboard.name, "error_log": self.errorlog.path,
            "capacity": {"ServerLimit": self.scoreboard.proc_capacity - POOL_SLOTS,
                         "ThreadLimit": self.scoreboard.thread_capacity},
            "fastcgi_pool": sorted(self.pool),
            "children": [{"pid": c.pid, "slot": c.slot, "generation": c.generation, "mpm": c.mpm,
                          "quiescing": c.quiescing} for c in sorted(self.children.values(), key=lambda c: c.slot)],
        }

    def control(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        settings = req.get("set") or {}
        if not isinstance(settings, dict):
            raise ValueError("'set' must be an object of Directive: value")
        if cmd == "status":
            return self.status()
        if cmd in ("graceful", "switch", "restart"):
            mpm = req.get("mpm")
            if cmd == "switch" and mpm not in MPMS:
                raise DirectiveError("MPM", f"must be one of {', '.join(MPMS)}, not {mpm!r}")
            if self.stopping_gracefully:
                raise ValueError("the server is stopping")
            cfg = self.restart(graceful=cmd != "restart", mpm=mpm, settings=settings,
                               replace=bool(req.get("replace")))
            return {"ok": True, "generation": self.generation, "mpm": cfg.mpm, "warnings": cfg.warnings,
                    "config": cfg.to_dict()}
        if cmd == "check":
            cfg = resolve(req.get("mpm") or self.config.mpm, settings)
            self.check_limits(cfg)
            return {"ok": True, "config": cfg.to_dict(), "warnings": cfg.warnings}
        if cmd == "graceful-stop":
            self.log("notice", "graceful stop requested over the control socket", "core")
            self.graceful_stop()
            return {"ok": True}
        if cmd == "stop":
            self.log("notice", "stop requested over the control socket", "core")
            self.running = False
            return {"ok": True}
        raise ValueError(f"unknown command {cmd!r} (status, graceful, restart, switch, check, graceful-stop, stop)")


def _raise_nofile() -> None:
    """Event children hold thousands of parked connections: take the hard limit on descriptors."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def _die_with_parent() -> None:
    """Linux: a child gets SIGTERM if the master dies (even by SIGKILL), so no orphan serves on."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _is_mpmlab(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"mpm" in f.read()
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# control client (the CLI and the dashboard)
def find_servers() -> list[dict[str, Any]]:
    """Masters running on this machine, from their run directories."""
    out = []
    root = runtime_root()
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        info = d / "info.json"
        try:
            data = json.loads(info.read_text())
        except (OSError, ValueError):
            continue
        if sb._pid_alive(int(data.get("pid", 0))):
            out.append(data)
    return out


def control_path(server: str | None) -> str:
    if server:
        return str(run_dir_for(server) / "ctl.sock")
    servers = find_servers()
    if len(servers) == 1:
        return servers[0]["control"]
    if not servers:
        raise RuntimeError("no mpmlab server runs here (start one with `mpmlab serve`)")
    raise RuntimeError("several servers run here; name one with --server: "
                       + ", ".join(s["listen"] for s in servers))


def ctl_request(path: str, req: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(req).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)
