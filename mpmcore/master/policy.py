"""The spare-server policy: what one maintenance tick does, as pure functions.

Apache's rules, per MPM, from ``perform_idle_server_maintenance`` in server/mpm/prefork/prefork.c,
server/mpm/worker/worker.c and server/mpm/event/event.c (docs/apache-behaviour.md sections 3-5;
docs/apache-differences.md says where mpmcore differs):

* more idle than the maximum (MaxSpareServers, or MaxSpareThreads): stop one idle child per tick,
  and the spawn rate falls back to 1;
* fewer idle than the minimum: start ``spawn rate`` children into free process slots, then double
  the rate (up to MAX_SPAWN_RATE) for the next tick, unless a graceful restart asked to hold off;
  with no free slot, say once that MaxRequestWorkers is reached;
* otherwise the rate falls back to 1.

The master takes a snapshot of its pool (``ChildrenSnapshot``), asks ``maintain`` what to do, and
carries out the ``Maintenance`` it gets: no fork, clock or scoreboard here, so every branch is
unit-tested (tests/unit/test_policy.py).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from mpmcore.master.children import Child

MAX_SPAWN_RATE = 32  # Apache's MAX_SPAWN_RATE
HOLD_OFF_TICKS = 10  # no exponential spawning for this many ticks after a graceful restart
BUSY_SPAWN_RATE = 8  # from this rate on, Apache logs "server seems busy"


class TickStep(enum.Enum):
    """What the master does on a one-second tick (Apache's ``ap_wait_or_timeout`` timing out)."""

    MAINTAIN = "maintain"  # idle-server maintenance
    START_REMAINING = "start"  # children a graceful restart still owes: into free slots, no maintenance
    WAIT_FOR_CHILDREN = "wait"  # graceful stop: children still finishing
    FINISH_STOP = "finish"  # graceful stop: every child is gone
    STOP_TIMED_OUT = "timeout"  # graceful stop: GracefulShutdownTimeout passed


def tick_step(stopping_gracefully: bool, children_left: int, graceful_deadline: float, now: float,
              remaining_to_start: int) -> TickStep:
    """The step for this tick. ``graceful_deadline`` 0 means no GracefulShutdownTimeout.

    A child's exit never cancels a tick. Apache's main loop (``server_main_loop``) reaps whatever
    exited, then sleeps one second, and the maintenance that follows the sleep runs whatever was
    reaped before it: a death only does not *add* a maintenance pass. When a graceful restart still
    owes children (``remaining_children_to_start``), the tick starts them instead of maintaining
    ("few of the servers we just started are in the IDLE state yet")."""
    if stopping_gracefully:
        if not children_left:
            return TickStep.FINISH_STOP
        if graceful_deadline and now > graceful_deadline:
            return TickStep.STOP_TIMED_OUT
        return TickStep.WAIT_FOR_CHILDREN
    if remaining_to_start:
        return TickStep.START_REMAINING
    return TickStep.MAINTAIN


# worker and event restart a child killed by a signal at once, up to this many in a row between two
# ticks; past that they wait for the tick (server_main_loop: "successive_kills")
MAX_SUCCESSIVE_KILLS = 3


@dataclass(frozen=True)
class Reap:
    """What the master does after reaping one child of its own (server_main_loop's reap path)."""

    replace_in_slot: bool  # start a child of the current generation in the reaped child's slot
    start_now: int  # then start this many more into free slots at once (startup_children)
    remaining_to_start: int  # what the graceful restart still owes after that
    successive_kills: int
    log: tuple[LogLine, ...] = ()


def after_reap(mpm: str, slot: int, slot_free: bool, killed_by_signal: bool, remaining_to_start: int,
               successive_kills: int, daemons_limit: int) -> Reap:
    """Apache's reap path, per MPM (prefork.c, worker.c and event.c, ``server_main_loop``):

    * while a graceful restart still owes children (``remaining_children_to_start``), each reaped
      child is replaced one for one in its own slot (prefork: only a slot below MaxRequestWorkers;
      not when a squatting worker child holds the slot, ``slot_free`` False);
    * worker and event: a child killed by a signal is replaced at once (``startup_children``), up
      to MAX_SUCCESSIVE_KILLS in a row before a tick resets the count (it logs AH10392 at the
      third, then every tenth); prefork has no such rule and waits for the tick's maintenance;
    * a child that exited by itself (idle stop, MaxConnectionsPerChild, graceful) waits for the
      maintenance too."""
    replace = bool(remaining_to_start) and slot_free and slot < daemons_limit
    if replace:
        remaining_to_start -= 1
    if mpm == "prefork" or not killed_by_signal:
        return Reap(replace, 0, remaining_to_start, successive_kills)
    successive_kills += 1
    if successive_kills >= MAX_SUCCESSIVE_KILLS:
        log: tuple[LogLine, ...] = ()
        if successive_kills % 10 == MAX_SUCCESSIVE_KILLS:
            log = (LogLine("warn", "AH10392: children are killed successively!"),)
        return Reap(replace, 0, remaining_to_start, successive_kills, log)
    return Reap(replace, remaining_to_start + 1, 0, successive_kills)


@dataclass(frozen=True)
class ChildIdle:
    """One child of the current generation that was not told to stop, as maintenance counts it."""

    pid: int
    slot: int
    idle: int  # its spare threads (prefork: 1 or 0); 0 for an event child that stopped accepting
    ready: bool  # its first thread is READY: only such a prefork child is stopped as idle


@dataclass(frozen=True)
class ChildrenSnapshot:
    """What maintenance looks at: the pool now, and the policy's state from the last tick."""

    mpm: str
    min_spare: int  # MinSpareServers (prefork) or MinSpareThreads
    max_spare: int  # MaxSpareServers (prefork) or MaxSpareThreads
    children: tuple[ChildIdle, ...]
    stopping_children: int  # on their way out (old generations, told to stop): only for the log
    free_slots: tuple[int, ...]  # where a new child may go, lowest first
    spawn_rate: int
    hold_off: int  # ticks left without exponential spawning
    maxclients_reported: bool

    @property
    def idle(self) -> int:
        return sum(c.idle for c in self.children)


@dataclass(frozen=True)
class LogLine:
    level: str
    message: str


@dataclass(frozen=True)
class Maintenance:
    """What one tick decided. The master stops ``stop``, writes ``log``, forks into ``spawn``,
    then logs what it spawned with ``spawn_reason``; the rest is the policy's state for the
    next tick."""

    spawn_rate: int
    hold_off: int
    maxclients_reported: bool
    spawn: tuple[int, ...] = ()
    spawn_reason: str = ""
    stop: ChildIdle | None = None
    log: tuple[LogLine, ...] = ()


def spare_directives(mpm: str) -> tuple[str, str, str]:
    """(minimum directive, maximum directive, what they count) for ``mpm``."""
    if mpm == "prefork":
        return "MinSpareServers", "MaxSpareServers", "children"
    return "MinSpareThreads", "MaxSpareThreads", "threads"


def idle_child_to_stop(mpm: str, children: Iterable[ChildIdle]) -> ChildIdle | None:
    """prefork: the idle child in the highest slot. worker/event: the child in the highest slot
    (Apache stops the last one it counted)."""
    candidates = [c for c in children if c.ready or mpm != "prefork"]
    return max(candidates, key=lambda c: c.slot, default=None)


def maintain(s: ChildrenSnapshot) -> Maintenance:
    idle = s.idle
    lo_name, hi_name, unit = spare_directives(s.mpm)
    if idle > s.max_spare:
        victim = idle_child_to_stop(s.mpm, s.children)
        log: tuple[LogLine, ...] = ()
        if victim is not None:
            # mpmlab's own line (Apache logs no single spawn or stop): the dashboard shows it
            log = (LogLine("info", f"maintenance: stopping idle child pid {victim.pid} in slot {victim.slot} "
                                   f"({idle} idle {unit} > {hi_name} {s.max_spare})"),)
        return Maintenance(spawn_rate=1, hold_off=s.hold_off, maxclients_reported=s.maxclients_reported,
                           stop=victim, log=log)
    if idle >= s.min_spare:
        return Maintenance(spawn_rate=1, hold_off=s.hold_off, maxclients_reported=s.maxclients_reported)
    if not s.free_slots:
        log = ()
        if not s.maxclients_reported:
            code = "AH00161" if s.mpm == "prefork" else "AH00286"
            log = (LogLine("error", f"{code}: server reached MaxRequestWorkers setting, consider raising the "
                                    "MaxRequestWorkers setting"),)
        return Maintenance(spawn_rate=1, hold_off=s.hold_off, maxclients_reported=True, log=log)
    n = min(s.spawn_rate, len(s.free_slots))
    log = ()
    if s.spawn_rate >= BUSY_SPAWN_RATE:
        active = len(s.children)
        if s.mpm == "prefork":
            busy = (f"AH00162: server seems busy, (you may need to increase StartServers, or "
                    f"Min/MaxSpareServers), spawning {n} children, there are {idle} idle, and "
                    f"{active} total children")
        else:
            busy = (f"AH00486: server seems busy, (you may need to increase StartServers, "
                    f"ThreadsPerChild or Min/MaxSpareThreads), spawning {n} children, there are "
                    f"around {idle} idle threads, {active} active children, "
                    f"and {s.stopping_children} children that are shutting down")
        log = (LogLine("info", busy),)
    rate, hold_off = s.spawn_rate, s.hold_off
    if hold_off > 0:
        hold_off -= 1
    elif rate < MAX_SPAWN_RATE:
        rate *= 2
    return Maintenance(spawn_rate=rate, hold_off=hold_off, maxclients_reported=s.maxclients_reported,
                       spawn=s.free_slots[:n], spawn_reason=f"{idle} idle {unit} < {lo_name} {s.min_spare}",
                       log=log)


def free_slots(mpm: str, generation: int, server_limit: int, max_request_workers: int, max_children: int,
               children: Iterable[Child], pool_slots: Iterable[int]) -> list[int]:
    """Process slots a new child of ``mpm`` may take, best first (docs/apache-behaviour.md
    sections 3-5). ``children`` are every child the master has, of any generation; ``pool_slots``
    the FastCGI pool's."""
    children = list(children)
    pool = set(pool_slots)
    occupied = {c.slot for c in children} | pool
    if mpm == "prefork":
        return [i for i in range(max_request_workers) if i not in occupied]
    active = sum(1 for c in children if c.generation == generation and not c.quiescing)
    if active >= max_children:
        return []
    if mpm == "worker":
        # worker squats: a slot held only by children that are on their way out (same MPM) is
        # free; the new child reuses its thread slots as the old threads let them go. Totally
        # free slots come first, as worker.c's perform_idle_server_maintenance orders them, so
        # no new child goes beside an old one still serving while an empty slot is left.
        empty, squat = [], []
        for i in range(max_children):
            if i in pool:
                continue
            holders = [c for c in children if c.slot == i]
            if not holders:
                empty.append(i)
            elif all(c.mpm == "worker" and (c.quiescing or c.generation != generation) for c in holders):
                squat.append(i)
        return empty + squat
    # event: no squatting; stopping children count against ServerLimit
    return [i for i in range(server_limit) if i not in occupied]


def startup_slots(limit: int, children: Iterable[Child], pool_slots: Iterable[int]) -> list[int]:
    """Where ``startup_children`` puts children: slots below ``limit`` no process holds at all
    (prefork.c, worker.c, event.c skip every slot whose ``pid`` is set; worker does not squat here)."""
    occupied = {c.slot for c in children} | set(pool_slots)
    return [i for i in range(limit) if i not in occupied]
