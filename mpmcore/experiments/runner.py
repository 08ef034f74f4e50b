"""Running an experiment: one plan against every target, round after round, into the run store.

``run_experiment`` starts one traffic runner process for the whole experiment, then for each
round (targets in an order rotated by one each round, so that they interleave) and each target:
``store.begin_target``, start the target (``targets.start``), start its recorder, warm up (the
first stage's mix for ``plan.warmup`` seconds, a "warmup" mark, not counted), then each stage (a
"stage" mark, its patterns started against the target with the stage's duration, stopped at its
end, their final figures and encoded HDR histograms kept), ``store.end_target`` with the pattern
results and the thresholds that failed, and the target stopped by pid. A target that cannot run
here is recorded "skipped" with the reason; one that fails is recorded "failed" with its message;
the run goes on. ``stop`` (a threading.Event: Ctrl-C in the CLI, the dashboard's stop button)
ends everything started, by pid, and records the run as "stopped".
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from mpmcore import __version__
from mpmcore.experiments.model import (
    Budget,
    PatternResult,
    PatternUse,
    Plan,
    Progress,
    RunStatus,
    Stage,
    StoredRun,
    TargetSpec,
)
from mpmcore.experiments.recorder import Recorder
from mpmcore.experiments.store import RunStore
from mpmcore.experiments.targets import RunningTarget, TargetError, available, effective_config, start
from mpmcore.traffic.control import TrafficClient, TrafficError, TrafficRunner
from mpmcore.traffic.runstats import Figures, RunInfo, RunState
from mpmcore.traffic.thresholds import check_all, parse_thresholds

__all__ = ["ProgressCallback", "host_info", "round_order", "run_experiment"]

ProgressCallback = Callable[[Progress], None]
#: seconds between two progress callbacks
PROGRESS_EVERY = 0.5
#: a pattern is started with this much more than its stage's duration and stopped at the stage's end
DURATION_MARGIN = 5.0


def host_info() -> dict[str, str]:
    return {"mpmlab": __version__, "cpus": str(os.cpu_count() or 0), "python": platform.python_version(),
            "kernel": platform.release(), "machine": platform.machine()}


def round_order(targets: Sequence[TargetSpec], rnd: int) -> list[TargetSpec]:
    """Targets in round ``rnd`` (1-based): rotated by one each round."""
    n = len(targets)
    if n == 0:
        return []
    k = (rnd - 1) % n
    return list(targets[k:]) + list(targets[:k])


class _Stopped(Exception):
    pass


class _Experiment:
    def __init__(self, plan: Plan, store: RunStore, targets: Sequence[TargetSpec], rounds: int, budget: Budget,
                 on_progress: ProgressCallback | None, stop: threading.Event, workdir: Path) -> None:
        self.plan = plan
        self.store = store
        self.targets = list(targets)
        self.rounds = rounds
        self.budget = budget
        self.on_progress = on_progress
        self.stop = stop
        self.workdir = workdir
        self.run_id = 0
        self.done_runs = 0  # target runs finished
        self.last_progress = 0.0
        self.thresholds = parse_thresholds(plan.thresholds) if plan.thresholds.strip() else []

    # -- progress ----------------------------------------------------------------------------------
    def progress(self, target: str, rnd: int, index: int, stage: str, elapsed: float, state: Any,
                 message: str = "", force: bool = False) -> None:
        if self.on_progress is None:
            return
        now = time.monotonic()
        if not force and now - self.last_progress < PROGRESS_EVERY:
            return
        self.last_progress = now
        total = self.rounds * len(self.targets)
        left = max(0.0, self.plan.duration - elapsed) + (total - self.done_runs - 1) * self.plan.duration
        try:
            self.on_progress(Progress(run_id=self.run_id, target=target, round=rnd, rounds=self.rounds, stage=stage,
                                      target_index=index, targets=len(self.targets), elapsed=round(elapsed, 2),
                                      target_seconds=self.plan.duration, seconds_left=round(max(left, 0.0), 1),
                                      state=state, message=message))
        except Exception:  # a consumer's bug must not end the experiment
            traceback.print_exc()

    # -- one stage's patterns ---------------------------------------------------------------------
    async def _run_mix(self, tc: TrafficClient, rec: Recorder, t: RunningTarget, mix: Sequence[PatternUse],
                       seconds: float, stage: str, progress: Callable[[str, float], None],
                       t_start: float) -> list[tuple[PatternUse, RunInfo, dict[str, str]]]:
        ids: list[tuple[PatternUse, str]] = []
        try:
            for use in mix:
                params: dict[str, Any] = dict(use.params)
                params.update(target=t.url, duration=seconds + DURATION_MARGIN, label=use.name)
                pid = await tc.start(use.pattern, **params)
                rec.watch(pid, use.name)
                ids.append((use, pid))
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                if self.stop.is_set():
                    raise _Stopped
                if not t.alive():
                    raise TargetError(f"{t.name} exited during stage {stage}")
                progress(stage, time.monotonic() - t_start)
                await asyncio.sleep(min(0.1, max(0.0, end - time.monotonic())))
        finally:
            results = []
            for use, pid in ids:
                try:
                    info = await tc.stop(pid)
                    hists = await tc.histograms(pid)
                    results.append((use, info, hists))
                except (KeyError, TrafficError) as e:
                    rec.note(f"{use.name}: could not collect its figures: {e}")
                rec.unwatch(pid)
        return results

    # -- one target run ----------------------------------------------------------------------------
    async def _target(self, tc: TrafficClient, spec: TargetSpec, rnd: int, index: int) -> None:
        name = spec.name
        why = available(spec)
        cfg = effective_config(spec, self.budget, self.plan)
        trid = self.store.begin_target(self.run_id, name, rnd, cfg)
        if why is not None:
            self.store.end_target(trid, "skipped", message=why)
            self.progress(name, rnd, index, "", 0.0, "failed", why, force=True)
            return
        self.progress(name, rnd, index, "", 0.0, "starting", force=True)
        t0 = time.monotonic()
        try:
            target = start(spec, self.budget, self.workdir / f"r{rnd}-{index}", self.plan)
        except (TargetError, OSError) as e:
            self.store.end_target(trid, "failed", message=str(e))
            self.progress(name, rnd, index, "", 0.0, "failed", str(e), force=True)
            return
        status: RunStatus = "complete"
        message = ""
        results: list[PatternResult] = []
        rec = Recorder(self.store, trid, target.source_spec, target.pids, t0=t0, error_log=target.error_log_path,
                       threads_per_child=target.threads_per_child)
        unsubscribe: Callable[[], None] | None = None
        interrupted = False
        try:
            unsubscribe = await tc.on_frame(rec.on_stats)
            self.store.set_config(trid, target.config)
            rec.start()
            t_traffic = time.monotonic()  # progress counts the plan's seconds, not the start-up's

            def progress(stage: str, elapsed: float) -> None:
                self.progress(name, rnd, index, stage, elapsed, "warmup" if stage == "warmup" else "running")

            if self.plan.warmup > 0:
                rec.stage = "warmup"
                rec.mark("warmup", f"warm-up {self.plan.warmup:g} s (not counted)")
                await self._run_mix(tc, rec, target, self.plan.stages[0].mix, self.plan.warmup, "warmup", progress,
                                    t_traffic)
            for stage in self.plan.stages:
                rec.stage = stage.name
                rec.mark("stage", stage.name)
                for use, info, hists in await self._run_mix(tc, rec, target, stage.mix, stage.duration, stage.name,
                                                            progress, t_traffic):
                    results.append(self._result(target, stage, use, info, hists))
        except _Stopped:
            status, message = "stopped", "stopped before its end"
        except Exception as e:  # this target's trouble (or a bug): recorded, the run goes on
            status, message = "failed", str(e) if isinstance(e, (TargetError, ValueError, OSError)) else (
                f"{type(e).__name__}: {e}")
            rec.note(f"failed: {message}")
        except BaseException:  # KeyboardInterrupt, cancellation: recorded as stopped, then passed on
            status, message = "stopped", "interrupted"
            interrupted = True
            raise
        finally:
            if unsubscribe is not None:
                unsubscribe()
            self.progress(name, rnd, index, "", self.plan.duration, "stopping", force=True)
            try:
                rec.stop()  # its last sample still sees the target's processes
            finally:
                target.stop()
                if interrupted:
                    self.store.end_target(trid, status, results, message=message)
        failed = self._thresholds(results, rec) if status == "complete" else []
        if rec.last_error and rec.samples_written == 0:
            message = message or f"recorder: {rec.last_error}"
        self.store.end_target(trid, status, results, message=message, thresholds_failed=failed)
        if status == "stopped":
            raise _Stopped

    def _result(self, target: RunningTarget, stage: Stage, use: PatternUse, info: RunInfo,
                hists: dict[str, str]) -> PatternResult:
        reason = target.config.not_comparable.get(use.name, "")
        total = info.total.to_json() if info.total is not None else {}
        return PatternResult(label=use.name, pattern=use.pattern, stage=stage.name, params=dict(use.params),
                             total=total, histograms=hists, comparable=not reason, note=reason)

    def _thresholds(self, results: list[PatternResult], rec: Recorder) -> list[str]:
        if not self.thresholds:
            return []
        failed: list[str] = []
        for r in results:
            fig = Figures.from_json(r.total) if r.total else None
            if fig is None or not r.comparable:
                continue
            info = RunInfo(id=r.label, pattern=r.pattern, label=r.label, state=RunState.FINISHED, stop_reason=None,
                           error=None, target="", address="", started_at=0.0, elapsed=fig.seconds, params={},
                           active_connections=0, peak_connections=0, total=fig)
            for o in check_all(self.thresholds, info):
                if o.failed:
                    failed.append(f"{r.label}: {o.line()}")
                    rec.mark("threshold", f"{r.label}: {o.threshold.text}")
        return failed

    # -- the whole ---------------------------------------------------------------------------------
    async def run(self) -> RunStatus:
        runner = TrafficRunner(stderr=open(self.workdir / "traffic.stderr", "wb"))
        try:
            await asyncio.to_thread(runner.start)
            async with await runner.client() as tc:
                for rnd in range(1, self.rounds + 1):
                    for index, spec in enumerate(round_order(self.targets, rnd)):
                        if self.stop.is_set():
                            return "stopped"
                        try:
                            await self._target(tc, spec, rnd, index)
                        except _Stopped:
                            return "stopped"
                        self.done_runs += 1
                return "complete"
        finally:
            await asyncio.to_thread(runner.close)
            if runner.stderr is not None and not isinstance(runner.stderr, int):
                runner.stderr.close()


def run_experiment(plan: Plan, *, store: RunStore, targets: Sequence[TargetSpec] | None = None,
                   rounds: int | None = None, budget: Budget | None = None,
                   on_progress: ProgressCallback | None = None, stop: threading.Event | None = None,
                   workdir: str | os.PathLike[str] | None = None, notes: str = "") -> StoredRun:
    """Run ``plan`` (its targets unless ``targets`` is given, its rounds and budget unless given)
    into ``store``; returns the stored run. Blocks until the run ends; call it from a thread of
    its own in a server (it runs an asyncio loop of its own)."""
    specs = list(targets) if targets is not None else list(plan.targets)
    if not specs:
        raise ValueError("no target to run the experiment against")
    b = budget or plan.budget
    if rounds is not None and not 1 <= rounds <= 20:
        raise ValueError(f"rounds must be between 1 and 20, got {rounds}")
    n_rounds = rounds or plan.rounds
    own_dir = workdir is None
    wd = Path(tempfile.mkdtemp(prefix="mpmlab-experiment-")) if workdir is None else Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    exp = _Experiment(replace(plan, budget=b), store, specs, n_rounds, b, on_progress, stop or threading.Event(), wd)
    exp.run_id = store.begin_run("experiment", plan.name, plan.title, plan.source, [s.name for s in specs],
                                 host=host_info(), notes=notes)
    status: RunStatus = "failed"
    try:
        status = asyncio.run(exp.run())
    except KeyboardInterrupt:
        status = "stopped"
        raise
    finally:
        store.end_run(exp.run_id, status)
        exp.progress("", n_rounds, len(specs) - 1, "", 0.0, "done" if status == "complete" else "failed",
                     status, force=True)
        if own_dir:
            shutil.rmtree(wd, ignore_errors=True)
    return store.load(exp.run_id)
