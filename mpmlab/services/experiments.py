"""Experiments in the dashboard: the run store, one experiment at a time in a background thread, and
the record button's live recordings.

``ExperimentService`` opens the run store (``--runs-db``; ``mpmcore.experiments.store``) when the
dashboard starts. A store that cannot be opened (a corrupt or foreign file) is reported, one line,
on the experiments page and by every route that needs it (503), and the rest of the dashboard runs.

An experiment runs through the engine's ``runner.run_experiment`` in a thread of its own, with a
stop Event and a progress callback; the last ``Progress`` is kept for the page's progress fragment
and ``GET /api/experiments/progress``. A second start while one runs is refused (``Busy``: 409).
"Run all" on the claims page is the same thread running the claims' plans one after another.

``LiveRecorder`` records the embedded core's live session into the store as a run of kind
"recording": the sampler's newest grid frame 10 times a second (only when it changed), one
``SecondSample`` a second from the sampler's summary and chart point, and a Mark when the MPM is
switched or the server restarted (the generation moved) or a traffic pattern started or stopped,
the grid's traffic-pattern table when it grows (``PATTERNS_MARK``), and the master's error_log
lines as the sampler reads them (``Sampler.log_listeners``). It buffers in memory and hands the
buffer to the store once a second, in a worker thread, so the event loop never waits for SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from mpmcore import __version__
from mpmcore.experiments.model import (
    EffectiveConfig,
    FrameRecord,
    LogLine,
    Mark,
    PatternSecond,
    Plan,
    PlanError,
    Progress,
    RunStatus,
    SecondSample,
    TargetSpec,
)
from mpmcore.experiments.store import RunStore, StoreError, default_path

if TYPE_CHECKING:
    from mpmlab.services.sampler import Sampler

log = logging.getLogger("mpmlab.dashboard")

#: Grid frames recorded per second (the sampler makes up to --fps; the replay needs ~10).
RECORD_HZ = 10.0
#: Seconds between hand-overs of a recording's buffer to the store.
FLUSH_INTERVAL = 1.0
#: A recording's note mark holding the grid's traffic-pattern table (a JSON list: a frame's pattern
#: byte n names table[n-1]) from its time on, so the replay can color cells by pattern as the live
#: page does. Not drawn on the charts.
PATTERNS_MARK = "patterns: "


class Busy(Exception):
    """An experiment (or a recording, for the record button) is already running."""


class Unavailable(Exception):
    """The run store could not be opened: the message says why (503)."""


def host_info() -> dict[str, str]:
    """What a run records about the machine it ran on."""
    return {"mpmlab": __version__, "python": platform.python_version(), "cpus": str(os.cpu_count() or 0),
            "kernel": platform.release(), "machine": platform.machine()}


# -- the state of the background run ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RunState:
    """What the experiments page shows about the background run: whether one runs, which plans
    (one, or the claims suite's), its last progress, and how the last one ended."""

    running: bool
    plans: tuple[str, ...] = ()
    plan_index: int = 0
    progress: Progress | None = None
    run_ids: tuple[int, ...] = ()
    status: str = "idle"  # idle | running | stopping | complete | stopped | failed
    message: str = ""
    started_at: float | None = None
    ended_at: float | None = None


RunFunction = Callable[[Plan, "Sequence[TargetSpec] | None", RunStore, int | None, int | None,
                        Callable[[Progress], None], threading.Event], int]


def engine_run(plan: Plan, targets: Sequence[TargetSpec] | None, store: RunStore, rounds: int | None,
               slots: int | None, on_progress: Callable[[Progress], None], stop: threading.Event) -> int:
    """One experiment through the engine's runner; the id of the run it stored."""
    from mpmcore.experiments import runner

    budget = replace(plan.budget, slots=slots) if slots is not None else None
    run = runner.run_experiment(plan, store=store, targets=targets, rounds=rounds, budget=budget,
                                on_progress=on_progress, stop=stop)
    return run.meta.id


class ExperimentService:
    """The run store and the one background experiment (see the module's docstring)."""

    def __init__(self, runs_db: str | None, run_function: RunFunction = engine_run) -> None:
        self.path = Path(runs_db) if runs_db else default_path()
        self.store: RunStore | None = None
        self.error: str | None = None
        self._run_function = run_function
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._state = RunState(running=False)
        self.recorder: LiveRecorder | None = None  # the record button's, while it records
        self.last_recording: int | None = None  # the run id of the recording stopped last

    # -- the store ----------------------------------------------------------------------------
    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.store = RunStore(self.path)
            self.error = None
        except (StoreError, OSError) as e:
            self.store = None
            self.error = f"run store {self.path}: {e}"
            log.error("%s", self.error)

    def need_store(self) -> RunStore:
        if self.store is None:
            raise Unavailable(self.error or f"run store {self.path} is not open")
        return self.store

    def close(self, timeout: float = 30.0) -> None:
        self.stop()
        t = self._thread
        if t is not None:
            t.join(timeout)
        if self.store is not None:
            self.store.close()
            self.store = None

    # -- the background experiment ------------------------------------------------------------
    @property
    def state(self) -> RunState:
        return self._state

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, plans: Sequence[Plan], targets: Sequence[TargetSpec] | None = None,
              rounds: int | None = None, slots: int | None = None) -> RunState:
        """Run ``plans`` one after another in the background (one plan: an experiment; the claims'
        plans: "run all"). Raises Busy when a run is going on, Unavailable without a store."""
        store = self.need_store()
        with self._lock:
            if self.busy:
                names = ", ".join(self._state.plans)
                raise Busy(f"an experiment is already running ({names}): stop it or wait until it ends")
            self._stop = threading.Event()
            self._state = RunState(running=True, plans=tuple(p.name for p in plans), status="running",
                                   started_at=time.time())
            self._thread = threading.Thread(target=self._run, args=(list(plans), targets, store, rounds, slots,
                                                                    self._stop), name="experiment", daemon=True)
            self._thread.start()
            return self._state

    def stop(self) -> bool:
        """Ask the running experiment to stop (the runner ends the target run it is in and stores
        the run as "stopped"). False when nothing runs."""
        if not self.busy:
            return False
        self._stop.set()
        self._state = replace(self._state, status="stopping")
        return True

    def wait(self, timeout: float | None = None) -> bool:
        t = self._thread
        if t is not None:
            t.join(timeout)
        return not self.busy

    def _run(self, plans: list[Plan], targets: Sequence[TargetSpec] | None, store: RunStore,
             rounds: int | None, slots: int | None, stop: threading.Event) -> None:
        ids: list[int] = []
        status, message = "complete", ""

        def progress(p: Progress) -> None:
            self._state = replace(self._state, progress=p, run_ids=tuple(ids) + (p.run_id,)
                                  if p.run_id not in ids else tuple(ids))

        try:
            for i, plan in enumerate(plans):
                if stop.is_set():
                    break
                self._state = replace(self._state, plan_index=i, progress=None)
                ids.append(self._run_function(plan, targets, store, rounds, slots, progress, stop))
                self._state = replace(self._state, run_ids=tuple(ids))
            if stop.is_set():
                status, message = "stopped", "stopped by the user"
            else:
                status, message = _outcome(store, ids)
        except (PlanError, ValueError, StoreError, OSError, RuntimeError) as e:
            status, message = "failed", str(e)
            log.error("experiment failed: %s", e)
        except Exception as e:  # a bug in one run must not take the dashboard down: say it, log it
            status, message = "failed", f"{type(e).__name__}: {e}"
            log.exception("experiment failed")
        self._state = replace(self._state, running=False, status=status, message=message, run_ids=tuple(ids),
                              ended_at=time.time())


def _outcome(store: RunStore, ids: Sequence[int]) -> tuple[str, str]:
    """How the runs ended, as the stored runs say: "complete" (with the skipped targets named: a
    missing package does not fail a run), or "failed" with each failed target's reason."""
    failed, notes = False, []
    for run_id in ids:
        run = store.load(run_id)
        bad = [f"{t.target}: {t.message or 'failed'}" for t in run.targets if t.status == "failed"]
        skipped = [f"{t.target} skipped ({t.message})" for t in run.targets if t.status == "skipped"]
        if run.meta.status == "failed" or bad:
            failed = True
        if bad or skipped or run.meta.status == "failed":
            notes.append(f"run {run_id} ({run.meta.name}): " + ("; ".join(bad + skipped) or run.meta.status))
    return ("failed" if failed else "complete"), " · ".join(notes)


# -- the record button ------------------------------------------------------------------------------
class LiveRecorder:
    """Records the embedded core's live session (see the module's docstring)."""

    def __init__(self, store: RunStore, sampler: Sampler, title: str = "") -> None:
        self.store = store
        self.sampler = sampler
        summary = sampler.summary
        self.mpm = summary.mpm if summary is not None else "event"
        self.target = f"core:{self.mpm}"
        self.t0 = time.time()
        name = time.strftime("live-%Y%m%d-%H%M%S", time.localtime(self.t0))
        self.title = title or f"live session {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.t0))}"
        self.run_id = store.begin_run("recording", name, self.title, "", [self.target], host=host_info())
        self.target_run_id = store.begin_target(self.run_id, self.target, 1, self._config())
        self.frames_recorded = 0
        self.samples_recorded = 0
        self._frames: list[FrameRecord] = []
        self._samples: list[SecondSample] = []
        self._marks: list[Mark] = [Mark(0.0, "note", f"recording began under {self.mpm}")]
        self._last_frame: bytes | None = None
        self._last_point_t: float | None = None
        self._last_gen = summary.mpm_generation if summary is not None else None
        self._traffic: set[str] = self.sampler.traffic.running_labels()
        self._logs: list[LogLine] = []
        self._patterns: list[str] | None = None  # the grid's pattern table as last marked
        self._task: asyncio.Task[None] | None = None
        self.cpu_seconds = 0.0  # thread CPU time spent recording (what it costs the dashboard)

    def _config(self) -> EffectiveConfig:
        st = self.sampler.core_state or {}
        cfg = st.get("config") or {}
        directives = cfg.get("directives") or {}
        return EffectiveConfig(target=self.target, kind="core", mpm=self.mpm, version=f"mpmlab {__version__}",
                               settings={str(k): str(v) for k, v in directives.items()},
                               url=self.sampler.settings.core_url, status_url=self.sampler.settings.core_url
                               + "server-status")

    @property
    def seconds(self) -> float:
        return time.time() - self.t0

    def start(self) -> None:
        self.sampler.log_listeners.append(self._on_log)  # the master's error_log from here on
        self._task = asyncio.create_task(self._loop(), name="recorder")

    async def stop(self, status: RunStatus = "complete") -> int:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._marks.append(Mark(round(self.seconds, 3), "note", "recording ended"))
        self.sampler.read_log()  # the lines written since the sampler's last read
        with contextlib.suppress(ValueError):
            self.sampler.log_listeners.remove(self._on_log)
        await asyncio.to_thread(self._flush)
        await asyncio.to_thread(self._end, status)
        return self.run_id

    def _end(self, status: RunStatus) -> None:
        self.store.end_target(self.target_run_id, status)
        self.store.end_run(self.run_id, status)

    async def _loop(self) -> None:
        period = 1.0 / RECORD_HZ
        last_flush = time.monotonic()
        while True:
            await asyncio.sleep(period)
            t0 = time.thread_time()
            self.take()
            self.cpu_seconds += time.thread_time() - t0
            if time.monotonic() - last_flush >= FLUSH_INTERVAL:
                last_flush = time.monotonic()
                await asyncio.to_thread(self._flush)

    def take(self) -> None:
        """One tick: the newest grid frame if it changed, a sample when a new chart point came, a
        mark when the generation moved."""
        s = self.sampler
        t = round(time.time() - self.t0, 3)
        frame = s.last_frame
        if frame is not None and frame is not self._last_frame:
            table = list(s.grid.patterns) if s.grid is not None else []
            if table != self._patterns:  # what the frames' pattern bytes index (PATTERNS_MARK)
                self._patterns = table
                self._marks.append(Mark(t, "note", PATTERNS_MARK + json.dumps(table)))
            self._last_frame = frame
            self._frames.append(FrameRecord(t, frame))
            self.frames_recorded += 1
        summary = s.summary
        if summary is None:
            return
        if summary.mpm_generation != self._last_gen and summary.mpm_generation is not None:
            if summary.mpm != self.mpm:
                self._marks.append(Mark(t, "switch", f"{self.mpm} -> {summary.mpm}"))
                self.mpm = summary.mpm
            else:
                self._marks.append(Mark(t, "restart", f"generation {summary.mpm_generation}"))
            self._last_gen = summary.mpm_generation
        traffic = self.sampler.traffic.running_labels()
        if traffic != self._traffic:  # a pattern started or stopped: a mark, as a stage is in an experiment
            started, stopped = sorted(traffic - self._traffic), sorted(self._traffic - traffic)
            words = [f"+{x}" for x in started] + [f"-{x}" for x in stopped]
            self._marks.append(Mark(t, "note", "traffic " + " ".join(words)))
            self._traffic = traffic
        points = s.history.points
        if points and points[-1].t != self._last_point_t:
            p = points[-1]
            self._last_point_t = p.t
            patterns = {label: PatternSecond(rps=float(v.get("rps") or 0.0), errors=round(v.get("errors") or 0),
                                             p50_ms=v.get("p50"), p99_ms=v.get("p99"))
                        for label, v in p.traffic.items()}
            procs = summary.processes
            threads = procs if summary.mpm == "prefork" or procs is None else \
                procs * (summary.threads_per_child or 1)
            self._samples.append(SecondSample(
                t=t, stage=summary.mpm, rps=float(p.rps or 0.0), errors=sum(x.errors for x in patterns.values()),
                states=dict(summary.state_counts) if summary.state_counts is not None else None,
                busy=summary.busy, idle=summary.idle, processes=procs, threads=threads,
                connections=summary.conns_total, parked=summary.conns_async_keep_alive,
                pss_bytes=summary.proc_sum.pss_kb * 1024 if summary.proc_sum.pss_kb is not None else None,
                rss_bytes=summary.proc_sum.rss_kb * 1024 if summary.proc_sum.rss_kb is not None else None,
                patterns=patterns))
            self.samples_recorded += 1

    def _on_log(self, lines: list[str]) -> None:
        t = round(time.time() - self.t0, 3)
        self._logs.extend(LogLine(t, "error_log", line) for line in lines)

    def _flush(self) -> None:
        logs, self._logs = self._logs, []
        frames, self._frames = self._frames, []
        samples, self._samples = self._samples, []
        marks, self._marks = self._marks, []
        try:
            if frames:
                self.store.add_frames(self.target_run_id, frames)
            if samples:
                self.store.add_samples(self.target_run_id, samples)
            if marks:
                self.store.add_marks(self.target_run_id, marks)
            if logs:
                self.store.add_logs(self.target_run_id, logs)
        except StoreError as e:  # the disk is full, the file went away: say so once a second, keep running
            log.error("recording %d: %s", self.run_id, e)


# -- plans and targets, as the pages list them ------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PlanEntry:
    plan: Plan
    origin: str  # "built-in" or the file's path


@dataclass(frozen=True, slots=True)
class TargetOption:
    name: str
    planned: bool
    available: bool
    why: str | None


#: Targets offered beside a plan's own: the embedded core under each MPM (always runnable here).
CORE_TARGETS = ("core:prefork", "core:worker", "core:event")


def plans_dir() -> Path:
    """The user's own plan files (``mpmcore.experiments.plan.default_plans_dir``)."""
    from mpmcore.experiments import plan as plans

    return plans.default_plans_dir()


def list_plans(user_dir: Path) -> tuple[list[PlanEntry], list[tuple[str, str]]]:
    """The built-in plans, then the user's files (sorted by name; one named as a built-in takes its
    place), and (dir, error) for each user file that is not a valid plan (listed with its error,
    never a crash)."""
    from mpmcore.experiments import plan as plans

    mine: list[PlanEntry] = []
    problems: list[tuple[str, str]] = []
    for p in plans.user_plans(user_dir):
        if isinstance(p, PlanError):
            problems.append((str(user_dir), str(p)))
        else:
            mine.append(PlanEntry(p, p.path or str(user_dir)))
    names = {e.plan.name for e in mine}  # a user's plan of a built-in's name is run in its place
    builtin = [p for p in plans.builtin_plans() if p.name not in names]
    builtin.sort(key=lambda p: p.claim is not None)  # the claims' plans after the others (as packaged)
    return [PlanEntry(p, "built-in") for p in builtin] + mine, problems


def find_plan(name: str, user_dir: Path) -> Plan:
    """The plan called ``name`` (a user's file of that name wins over a built-in). KeyError."""
    entries, _ = list_plans(user_dir)
    found = [e.plan for e in entries if e.plan.name == name]
    if not found:
        raise KeyError(f"no experiment {name!r} (see GET /api/experiments)")
    return found[-1]


def target_options(plan: Plan) -> list[TargetOption]:
    """The plan's targets, then the core's MPMs it does not list; each with whether it can run here."""
    from mpmcore.experiments import targets as tg

    names = [t.name for t in plan.targets]
    out: list[TargetOption] = []
    for spec in list(plan.targets) + [tg.parse_target(n) for n in CORE_TARGETS if n not in names]:
        why = tg.available(spec)
        out.append(TargetOption(spec.name, spec.name in names, why is None, why))
    return out


def parse_targets(given: Sequence[str]) -> list[TargetSpec]:
    """Target names from a request: ValueError naming the first bad one (422)."""
    from mpmcore.experiments import targets as tg

    if not given:
        raise ValueError("choose at least one target")
    out: list[TargetSpec] = []
    for name in given:
        try:
            out.append(tg.parse_target(name.strip()))
        except (ValueError, PlanError) as e:
            raise ValueError(f"target {name!r}: {e}") from None
    return out


def claim_plans() -> list[Plan]:
    """The claims suite: each claim's built-in plan, in the essay's order (a claim whose plan is
    not packaged is left out)."""
    from mpmcore.experiments import claims
    from mpmcore.experiments import plan as plans

    builtin = {p.name: p for p in plans.builtin_plans()}
    return [builtin[c.plan] for c in claims.CLAIMS.values() if c.plan in builtin]
