"""The master: binds once, forks children, keeps the spares, restarts, and switches MPM.

Read it top to bottom like gunicorn's arbiter. ``run()`` sets up, then loops over named steps
until told to stop:

    sleep            until the next tick, a signal (the wake-up pipe) or a control request
    serve_control    answer the control socket (one handler per command: ``COMMANDS``)
    handle_signals   the queued signals, one handler each (``SIGNAL_HANDLERS``)
    reap             collect exited children, repair their slots, replace them as Apache does
                     (policy.after_reap: one for one after a graceful restart, at once when
                     worker/event children are killed by a signal)
    tick             once a second: the children a graceful restart still owes, else idle-server
                     maintenance (policy.py); graceful-stop completion, memory sampling

It is single-threaded, so fork() is safe, and it never serves a request itself.

Signals, as Apache's: TERM (and INT) stop, HUP restart, USR1 graceful restart, WINCH graceful stop.
The same actions, and the live MPM switch Apache does not have, come over a Unix control socket
(``mpmlab ctl``, control.py).
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any

from mpmcore import __version__
from mpmcore import scoreboard as sb
from mpmcore.content.handlers import warm_up
from mpmcore.content.server import make_handler
from mpmcore.directives import DIRECTIVES, MPMS, Config, DirectiveError, canonical, resolve
from mpmcore.errorlog import ErrorLog
from mpmcore.master import policy
from mpmcore.master.children import (
    Child,
    fork_process,
    is_mpmlab,
    raise_nofile,
    read_smaps_rollup,
    signal_pid,
)
from mpmcore.master.control import (
    ControlServer,
    make_private_dir,
    parse_listen,
    read_private,
    run_dir_for,
    write_private,
)
from mpmcore.master.fcgi_pool import FastCGIPool
from mpmcore.mpm import RUN_CHILD
from mpmcore.mpm.common import ChildEnv, Listener
from mpmcore.procs import MASTER_SIGNALS, NotOurProcess, ProcessIdentity

TICK = 1.0  # Apache's one-second maintenance interval
HARD_STOP_TERM_SECONDS = 9.0  # TERM, then KILL after ~9 s (ap_reclaim_child_processes)
MEM_SAMPLE_SECONDS = 2.0  # PSS/RSS of each child from /proc
REAP_POLL_SECONDS = 0.01  # while stopping children: how often to look for exits

EXIT_STOP, EXIT_ERROR = 0, 1
# process slots kept at the top of the scoreboard for the largest FastCGI pool (the directive's maximum)
POOL_SLOTS = int(DIRECTIVES["UnsafeFastCGIPool"].max or 0)

CommandHandler = Callable[[dict[str, Any]], dict[str, Any]]


class Master:
    """One server: its listeners, scoreboard, children of one MPM at a time, and the FastCGI pool.
    ``run()`` is the whole life of the process; everything it uses is created here, empty, and
    filled by ``setup()``."""

    def __init__(self, listen: str = "127.0.0.1:8080", mpm: str = "event", settings: dict[str, Any] | None = None,
                 tls_listen: str | None = None, tls_cert: str | None = None, tls_key: str | None = None,
                 echo_log: bool = True, log_level: str = "info"):
        self.listen = listen
        self.tls_listen = tls_listen
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.settings: dict[str, Any] = {canonical(k): v for k, v in (settings or {}).items()}
        self.config: Config = resolve(mpm, self.settings)  # raises DirectiveError before anything starts
        self.echo_log, self.log_level = echo_log, log_level
        self.run_dir = run_dir_for(listen)
        # made by setup()
        self.errorlog: ErrorLog | None = None
        self._scoreboard: sb.Scoreboard | None = None
        self.listeners: list[Listener] = []
        self.control_server = ControlServer(self.run_dir / "ctl.sock")
        self.wake_r = self.wake_w = -1  # signal.set_wakeup_fd's pipe: a signal wakes sleep()
        # the loop
        self.signals: list[int] = []  # queued by the handler, handled by the loop
        self.running = False
        self.exit_code = EXIT_STOP
        self.stopping_gracefully = False
        self.graceful_deadline = 0.0  # GracefulShutdownTimeout during a graceful stop (0 = none)
        self.next_tick = 0.0
        self.last_mem_sample = 0.0
        # children and generations
        self.children: dict[int, Child] = {}
        self.slot_owner: dict[int, int] = {}  # process slot -> pid written in its record
        self.generation = 0
        self.remaining_to_start = 0  # Apache's remaining_children_to_start
        self.successive_kills = 0  # children killed by a signal since the last tick (worker, event)
        # the spare-server policy's state between ticks
        self.spawn_rate = 1
        self.hold_off = 0
        self.maxclients_reported = False
        self.pool = FastCGIPool(self.run_dir / "fcgi.sock", self._fork, self.log)  # for /unsafe

        self.SIGNAL_HANDLERS: dict[int, Callable[[int], None]] = {
            signal.SIGCHLD: self.handle_chld,
            signal.SIGTERM: self.handle_term,
            signal.SIGINT: self.handle_term,
            signal.SIGHUP: self.handle_hup,
            signal.SIGUSR1: self.handle_usr1,
            signal.SIGWINCH: self.handle_winch,
        }
        self.COMMANDS: dict[str, CommandHandler] = {
            "status": self.cmd_status,
            "graceful": self.cmd_restart,
            "restart": self.cmd_restart,
            "switch": self.cmd_restart,
            "check": self.cmd_check,
            "graceful-stop": self.cmd_graceful_stop,
            "stop": self.cmd_stop,
        }

    @property
    def scoreboard(self) -> sb.Scoreboard:
        if self._scoreboard is None:
            raise RuntimeError("the master is not set up (no scoreboard yet)")
        return self._scoreboard

    def log(self, level: str, message: str, module: str | None = None) -> None:
        self.write_log(module or f"mpm_{self.config.mpm}", level, message)

    def write_log(self, module: str, level: str, message: str) -> None:
        """The error log; before setup() opened it, nothing is written (the caller raises)."""
        if self.errorlog is not None:
            self.errorlog(module, level, message)

    # ---------------------------------------------------------------------------------------
    # the main loop
    def run(self) -> int:
        try:
            self.setup()
        except Exception as e:
            self.log("emerg", f"could not start: {e}", "core")
            if self._scoreboard is not None:
                self._scoreboard.unlink()
            raise
        try:
            self.start()
            self.next_tick = time.monotonic() + TICK
            while self.running:
                if self.sleep(self.next_tick):
                    self.serve_control()
                self.handle_signals()
                if self.running:  # a stop leaves the rest to stop_children()
                    self.reap()
                    now = time.monotonic()
                    if now >= self.next_tick:
                        self.next_tick = now + TICK
                        self.tick(now)
            self.stop_children()
        except Exception:
            self.log("crit", "master failed: " + traceback.format_exc().replace("\n", " | "), "core")
            self.stop_children()
            self.exit_code = EXIT_ERROR
        finally:
            self.log("notice", "shutdown complete", "core")
            self.teardown()
        return self.exit_code

    def start(self) -> None:
        self.new_generation(first=True)
        self.log("notice", f"mpmlab/{__version__} ({self.config.mpm}) configured -- resuming normal operations "
                           f"on {self.listen}" + (f" and https://{self.tls_listen}" if self.tls_listen else ""), "core")
        for w in self.config.warnings:
            self.log("warn", w)
        self.running = True

    def sleep(self, until: float) -> bool:
        """Wait for the next tick, a signal or a control request; True when a control request
        waits. A queued signal means no wait at all."""
        timeout = 0.0 if self.signals else max(0.0, until - time.monotonic())
        try:
            ready, _, _ = select.select([self.wake_r, self.control_server.fileno()], [], [], timeout)
        except InterruptedError:
            return False
        if self.wake_r in ready:
            try:
                while os.read(self.wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        return self.control_server.fileno() in ready

    def tick(self, now: float) -> None:
        step = policy.tick_step(self.stopping_gracefully, len(self.children), self.graceful_deadline, now,
                                self.remaining_to_start)
        self.successive_kills = 0  # Apache resets it whenever its wait times out
        if step is policy.TickStep.FINISH_STOP:
            self.running = False
        elif step is policy.TickStep.STOP_TIMED_OUT:
            self.log("warn", "GracefulShutdownTimeout reached, stopping the remaining children")
            self.running = False
        elif step is policy.TickStep.START_REMAINING:
            self.startup_children(self.remaining_to_start)
            self.remaining_to_start = 0
        elif step is policy.TickStep.MAINTAIN:
            self.maintenance()
        if now - self.last_mem_sample >= MEM_SAMPLE_SECONDS:
            self.sample_memory()
            self.last_mem_sample = now

    # ---------------------------------------------------------------------------------------
    # signals: the handler only queues the number; the loop runs one handler per signal
    def _queue_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)

    def handle_signals(self) -> None:
        while self.signals:
            s = self.signals.pop(0)
            handler = self.SIGNAL_HANDLERS.get(s)
            if handler is not None:
                handler(s)

    def handle_chld(self, signum: int) -> None:
        """Nothing here: reap() runs right after the signals."""

    def handle_term(self, signum: int) -> None:
        self.log("notice", f"caught {signal.Signals(signum).name}, shutting down", "core")
        self.running = False

    def handle_hup(self, signum: int) -> None:
        self.log("notice", "SIGHUP received.  Attempting to restart", "core")
        self.restart(graceful=False)

    def handle_usr1(self, signum: int) -> None:
        self.log("notice", "Graceful restart requested, doing restart", "core")
        self.restart(graceful=True)

    def handle_winch(self, signum: int) -> None:
        self.log("notice", "caught SIGWINCH, shutting down gracefully", "core")
        self.graceful_stop()

    # ---------------------------------------------------------------------------------------
    # control commands: one JSON request in, one JSON answer out (control.py does the socket)
    def serve_control(self) -> None:
        self.control_server.serve(self.control)

    def control(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        settings = req.get("set") or {}
        if not isinstance(settings, dict):
            raise ValueError("'set' must be an object of Directive: value")
        handler = self.COMMANDS.get(cmd) if isinstance(cmd, str) else None
        if handler is None:
            raise ValueError(f"unknown command {cmd!r} (status, graceful, restart, switch, check, graceful-stop, stop)")
        return handler(req)

    def cmd_status(self, req: dict[str, Any]) -> dict[str, Any]:
        return self.status()

    def cmd_restart(self, req: dict[str, Any]) -> dict[str, Any]:
        """graceful, restart, switch: a new generation (switch: of another MPM)."""
        cmd, mpm = req["cmd"], req.get("mpm")
        if cmd == "switch" and mpm not in MPMS:
            raise DirectiveError("MPM", f"must be one of {', '.join(MPMS)}, not {mpm!r}")
        if self.stopping_gracefully:
            raise ValueError("the server is stopping")
        cfg = self.restart(graceful=cmd != "restart", mpm=mpm, settings=req.get("set") or {},
                           replace=bool(req.get("replace")))
        return {"ok": True, "generation": self.generation, "mpm": cfg.mpm, "warnings": cfg.warnings,
                "config": cfg.to_dict()}

    def cmd_check(self, req: dict[str, Any]) -> dict[str, Any]:
        """Resolve a configuration without applying it."""
        cfg = resolve(req.get("mpm") or self.config.mpm, req.get("set") or {})
        self.check_limits(cfg)
        return {"ok": True, "config": cfg.to_dict(), "warnings": cfg.warnings}

    def cmd_graceful_stop(self, req: dict[str, Any]) -> dict[str, Any]:
        self.log("notice", "graceful stop requested over the control socket", "core")
        self.graceful_stop()
        return {"ok": True}

    def cmd_stop(self, req: dict[str, Any]) -> dict[str, Any]:
        self.log("notice", "stop requested over the control socket", "core")
        self.running = False
        return {"ok": True}

    def status(self) -> dict[str, Any]:
        board = self.scoreboard
        return {
            "ok": True, "pid": os.getpid(), "listen": self.listen, "tls_listen": self.tls_listen,
            "mpm": self.config.mpm, "generation": self.generation, "config": self.config.to_dict(),
            "settings": {k: str(v) for k, v in self.settings.items()},
            "scoreboard": board.name, "error_log": self.errorlog.path if self.errorlog else "",
            "capacity": {"ServerLimit": board.proc_capacity - POOL_SLOTS,
                         "ThreadLimit": board.thread_capacity},
            "fastcgi_pool": self.pool.pids(),
            "children": [{"pid": c.pid, "slot": c.slot, "generation": c.generation, "mpm": c.mpm,
                          "quiescing": c.quiescing} for c in sorted(self.children.values(), key=lambda c: c.slot)],
        }

    # ---------------------------------------------------------------------------------------
    # generations: start, graceful restart, hard restart, switch, stops
    def _publish_config(self) -> None:
        cfg = self.config
        self.scoreboard.update_global(
            mpm=sb.MPM_IDS[cfg.mpm], server_limit=cfg["ServerLimit"], thread_limit=cfg.values.get("ThreadLimit", 1),
            threads_per_child=cfg.values.get("ThreadsPerChild", 1), max_request_workers=cfg["MaxRequestWorkers"],
            running_generation=self.generation, config_generation=self.generation + 1)

    def new_generation(self, first: bool = False, graceful: bool = False) -> None:
        """Start a generation. At start and after a hard restart StartServers children start at
        once; after a graceful restart none does: each old child reaped is replaced in its slot
        (reap) and the next tick starts what is left (prefork_run, worker_run, event_run:
        ``remaining_children_to_start``, and ``hold_off_on_exponential_spawning``)."""
        if not first:
            self.generation += 1
        self._publish_config()
        self.ensure_pool()
        self.spawn_rate = 1
        self.maxclients_reported = False
        n = min(self.config["StartServers"], self.daemons_limit())
        if graceful:
            self.remaining_to_start = n
            self.next_tick = time.monotonic() + TICK  # Apache's first wait after the restart
        else:
            self.remaining_to_start = 0
            self.startup_children(n)

    def daemons_limit(self) -> int:
        """Apache's ap_daemons_limit: how many children of this configuration may run at once."""
        return self.config.max_children

    def startup_children(self, n: int) -> None:
        """Start up to ``n`` children of the current generation in slots no process holds
        (Apache's startup_children), never more than the configuration may run at once. Event's
        stopping children keep their slots, so its new ones may go up to ServerLimit."""
        cfg = self.config
        n = min(n, self.daemons_limit() - len(self.current_children()))
        limit = cfg["ServerLimit"] if cfg.mpm == "event" else self.daemons_limit()
        for slot in policy.startup_slots(limit, self.children.values(), self.pool.slots())[:max(0, n)]:
            self.spawn(slot)

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
            self.hold_off = policy.HOLD_OFF_TICKS
            self.new_generation(graceful=True)
        else:
            self.stop_children()
            procs, threads = self.capacity()
            if procs > self.scoreboard.proc_capacity or threads > self.scoreboard.thread_capacity:
                # re-create the segment with the new size (readers see `superseded` and re-attach)
                self.log("notice", f"re-creating the scoreboard for {procs} x {threads} slots", "core")
                old = self.scoreboard
                old.unlink()
                self._scoreboard = sb.Scoreboard.create(old.name, procs, threads)
                self._scoreboard.update_global(listen=self.listen, tls_listen=self.tls_listen or "")
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

    def graceful_stop(self) -> None:
        """WINCH: close the listeners (new clients are refused), let children finish, then exit."""
        self.stopping_gracefully = True
        self.close_listeners()
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
            signal_pid(c.pid, signal.SIGTERM)
        self.stop_pool()
        deadline = time.monotonic() + HARD_STOP_TERM_SECONDS
        killed = False
        while self.children:
            self.reap(respawn=False)
            if not self.children:
                break
            if time.monotonic() > deadline and not killed:
                for c in list(self.children.values()):
                    self.log("warn", f"child process {c.pid} still did not exit, sending a SIGKILL", "core")
                    signal_pid(c.pid, signal.SIGKILL)
                killed = True
            time.sleep(REAP_POLL_SECONDS)

    # ---------------------------------------------------------------------------------------
    # children
    def _fork(self, what: str, module: str, body: Callable[[], int]) -> int | None:
        """fork() a child or pool process (children.fork_process); it drops the master's wake-up
        pipe and control socket first."""
        def child_body() -> int:
            self.control_server.close_in_child()
            return body()
        assert self.errorlog is not None  # forks happen after setup()
        return fork_process(what, module, child_body, self.errorlog, (self.wake_r, self.wake_w))

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
        env = ChildEnv(scoreboard=self.scoreboard, proc=slot, generation=self.generation, config=cfg,
                       listeners=self.listeners, log=self.write_log, make_handler=make_handler,
                       vhost=self.listen,
                       fcgi_socket=str(self.pool.path) if cfg["UnsafeFastCGIPool"] else None)
        return RUN_CHILD[cfg.mpm](env)

    def reap(self, respawn: bool = True) -> None:
        """Collect every exited child and pool process, and repair the slots they leave; with
        ``respawn`` (not while stopping) replace children as Apache's reap path does
        (policy.after_reap)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.pool:
                self.pool.reaped(pid, status, self.scoreboard)
                continue
            child = self.children.pop(pid, None)
            if child is None:
                continue
            signaled = os.WIFSIGNALED(status)
            if signaled:
                sig = os.WTERMSIG(status)
                if not (sig == signal.SIGTERM and child.quiescing):
                    self.log("notice", f"child pid {pid} exit signal {signal.Signals(sig).name} ({sig})", "core")
            elif os.WEXITSTATUS(status) != 0:
                self.log("error", f"child pid {pid} exited with status {os.WEXITSTATUS(status)}", "core")
            self._clean_slots(child)
            if respawn and self.running and not self.stopping_gracefully:
                self.replace(child, signaled)

    def replace(self, child: Child, signaled: bool) -> None:
        """Carry out policy.after_reap for one reaped child."""
        slot_free = all(c.slot != child.slot for c in self.children.values()) and child.slot not in self.pool.slots()
        d = policy.after_reap(self.config.mpm, child.slot, slot_free, signaled, self.remaining_to_start,
                              self.successive_kills, self.daemons_limit())
        self.remaining_to_start, self.successive_kills = d.remaining_to_start, d.successive_kills
        for line in d.log:
            self.log(line.level, line.message)
        if d.replace_in_slot:
            self.spawn(child.slot)
        if d.start_now:
            self.startup_children(d.start_now)

    def _clean_slots(self, child: Child) -> None:
        """Repair a reaped child's records: it was their only writer, and a kill may have caught it
        mid-write (an odd sequence no reader could ever verify again). Its thread slots go DEAD
        (``.``) with an even sequence; only records that carry its pid when a squatter shares the
        process slot (worker), since the others are the squatter's by now."""
        s = self.scoreboard
        shared = any(c.slot == child.slot for c in self.children.values())
        torn = s.repair_dead_child(child.slot, child.pid, owns_slot=not shared)
        if torn:
            self.log("info", f"repaired {torn} scoreboard record{'s' if torn != 1 else ''} child pid {child.pid} "
                             f"was killed in the middle of writing (slot {child.slot})", "core")
        if self.slot_owner.get(child.slot) == child.pid:
            del self.slot_owner[child.slot]
            s.clear_proc(child.slot)
            s.clear_child(child.slot)

    def quiesce(self, child: Child) -> None:
        """Tell one child to finish gracefully (Apache's pod / AP_SIG_GRACEFUL)."""
        if child.quiescing:
            return
        child.quiescing = True
        if self.slot_owner.get(child.slot) == child.pid:
            self.scoreboard.update_proc(child.slot, quiescing=1)
        signal_pid(child.pid, signal.SIGUSR1)

    def current_children(self) -> list[Child]:
        return [c for c in self.children.values() if c.generation == self.generation and not c.quiescing]

    def free_slots(self) -> list[int]:
        cfg = self.config
        return policy.free_slots(cfg.mpm, self.generation, cfg["ServerLimit"], cfg["MaxRequestWorkers"],
                                 cfg.max_children, self.children.values(), self.pool.slots())

    # ---------------------------------------------------------------------------------------
    # idle-server maintenance: a snapshot to policy.maintain, then its decision carried out
    def maintenance(self) -> None:
        self.ensure_pool()
        decision = policy.maintain(self.children_snapshot())
        self.spawn_rate, self.hold_off = decision.spawn_rate, decision.hold_off
        self.maxclients_reported = decision.maxclients_reported
        if decision.stop is not None:
            victim = self.children.get(decision.stop.pid)
            if victim is not None:
                self.quiesce(victim)
        for line in decision.log:
            self.log(line.level, line.message)
        pids = [pid for pid in (self.spawn(slot) for slot in decision.spawn) if pid]
        if pids:  # a failed fork has logged its own alert
            self.log("info", f"maintenance: spawned {len(pids)} child{'ren' if len(pids) != 1 else ''} "
                             f"(pid {', '.join(map(str, pids))}; {decision.spawn_reason})")

    def children_snapshot(self) -> policy.ChildrenSnapshot:
        cfg = self.config
        lo_name, hi_name, _ = policy.spare_directives(cfg.mpm)
        current = self.current_children()
        return policy.ChildrenSnapshot(
            mpm=cfg.mpm, min_spare=cfg[lo_name], max_spare=cfg[hi_name],
            children=tuple(self.child_idle(c) for c in current),
            stopping_children=len(self.children) - len(current), free_slots=tuple(self.free_slots()),
            spawn_rate=self.spawn_rate, hold_off=self.hold_off, maxclients_reported=self.maxclients_reported)

    def child_idle(self, c: Child) -> policy.ChildIdle:
        """Idle for maintenance: prefork counts children, worker/event threads, in S or _. Thread
        slots a young child has not claimed yet count as S, as Apache's parent marks them. An event
        child that stopped accepting has no spare threads (event.c counts ``!ps->not_accepting``
        children only): no new client can reach them, so more children are started."""
        s = self.scoreboard
        first = s.worker(c.slot, 0)
        ready = first.pid == c.pid and first.status == sb.READY
        if c.mpm == "event":
            rec = s.children[c.slot]
            if rec.pid == c.pid and rec.not_accepting:
                return policy.ChildIdle(c.pid, c.slot, 0, ready)
        idle = 0
        for t in range(c.threads):
            w = s.worker(c.slot, t)
            if w.pid != c.pid or w.status in (sb.STARTING, sb.READY):  # not claimed yet: STARTING
                idle += 1
        return policy.ChildIdle(c.pid, c.slot, idle, ready)

    def sample_memory(self) -> None:
        for c in list(self.children.values()):
            pss, rss = read_smaps_rollup(c.pid)
            if self.slot_owner.get(c.slot) == c.pid:
                self.scoreboard.update_proc(c.slot, pss_kb=pss, rss_kb=rss, mem_time=time.time())
        ru_self = os.times()
        self.scoreboard.update_global(parent_cpu_user=ru_self.user, parent_cpu_system=ru_self.system,
                                      children_cpu_user=ru_self.children_user,
                                      children_cpu_system=ru_self.children_system)

    # ---------------------------------------------------------------------------------------
    # the FastCGI pool for /unsafe (fcgi_pool.py)
    def ensure_pool(self) -> None:
        self.pool.ensure(self.config["UnsafeFastCGIPool"], self.scoreboard,
                         (c.slot for c in self.children.values()), self.generation, self.listeners)

    def stop_pool(self) -> None:
        """TERM the pool, KILL what is left after HARD_STOP_TERM_SECONDS; reap it all."""
        self.pool.terminate()
        deadline = time.monotonic() + HARD_STOP_TERM_SECONDS
        while self.pool.retiring and time.monotonic() < deadline:
            self.reap(respawn=False)
            time.sleep(REAP_POLL_SECONDS)
        self.pool.kill_retiring()
        while self.pool.retiring and time.monotonic() < deadline + 5:
            self.reap(respawn=False)
            time.sleep(REAP_POLL_SECONDS)

    # ---------------------------------------------------------------------------------------
    # set-up and tear-down
    def setup(self) -> None:
        raise_nofile()
        warm_up()  # shared by every child through fork()
        make_private_dir(self.run_dir)  # 0700, ours, checked with lstat (control.py)
        self.errorlog = ErrorLog(str(self.run_dir / "error_log"), echo=self.echo_log, level=self.log_level)
        pidfile = self.run_dir / "master.pid"
        try:  # a master still running names itself there; a pid reused since a crash does not count
            old = ProcessIdentity.from_pidfile(pidfile, {os.path.basename(os.path.realpath(sys.executable))})
        except NotOurProcess as e:
            self.log("notice", f"stale pid file: {e}", "core")
            old = None
        if old and old.pid != os.getpid() and is_mpmlab(old.pid):
            raise RuntimeError(f"a master for {self.listen} already runs (pid {old.pid})")
        self.listeners = [Listener(self._bind(self.listen))]
        if self.tls_listen:
            self.listeners.append(self._tls_listener(self.tls_listen))
        procs, threads = self.capacity()
        self._scoreboard = sb.Scoreboard.create(sb.segment_name(self.listen), procs, threads,
                                                log=lambda m: self.log("warn", m, "core"))
        self._scoreboard.update_global(listen=self.listen, tls_listen=self.tls_listen or "")
        write_private(pidfile, f"{os.getpid()}\n".encode())  # never through a link (control.py)
        self.control_server.open()
        write_private(self.run_dir / "info.json", json.dumps({
            "listen": self.listen, "tls_listen": self.tls_listen, "pid": os.getpid(),
            "scoreboard": self._scoreboard.name, "error_log": str(self.run_dir / "error_log"),
            "control": str(self.control_server.path), "version": __version__}).encode())
        # signals: handlers only queue the number; the loop acts (set_wakeup_fd wakes it)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        for s in MASTER_SIGNALS:  # the same set fork_process blocks across fork
            signal.signal(s, self._queue_signal)

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

    def _tls_listener(self, listen: str) -> Listener:
        # cryptography is heavy to import: only a master with a TLS listener pays for it
        from mpmcore import tls
        cert, key = self.tls_cert, self.tls_key
        if not cert:
            cert, key = tls.make_self_signed(str(self.run_dir), parse_listen(listen)[0])
            self.tls_cert, self.tls_key = cert, key
            self.log("notice", f"made a self-signed certificate for the TLS listener: {cert}", "ssl")
        return Listener(self._bind(listen), tls.server_context(cert, key))

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

    def teardown(self) -> None:
        signal.set_wakeup_fd(-1)
        self.close_listeners()
        self.control_server.close()
        self.pool.close()
        if self._scoreboard is not None:
            self._scoreboard.unlink()
        for name in ("master.pid", "info.json"):  # only while they are still this master's
            path = self.run_dir / name
            try:
                data = read_private(path) or b""
                mine = (json.loads(data).get("pid") if name == "info.json" else int(data or 0)) == os.getpid()
            except (OSError, ValueError, AttributeError):  # UnsafeFile too: a link there is not ours
                mine = False
            if mine:
                path.unlink(missing_ok=True)

    def close_listeners(self) -> None:
        for lst in self.listeners:
            try:
                lst.sock.close()
            except OSError:
                pass
