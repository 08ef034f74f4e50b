"""``mpmlab experiment list|show|run``: experiments from the command line.

    mpmlab experiment list [--plans DIR]
    mpmlab experiment show NAME|FILE [--targets ...] [--slots N]
    mpmlab experiment run NAME|FILE [--targets core:event,apache:worker,nginx] [--rounds N] [--slots N]
                          [--out DIR] [--runs-db PATH]
    mpmlab experiment report RUN_ID|last [--out DIR] [--runs-db PATH]    (mpmcore.experiments.exports)
    mpmlab experiment export RUN_ID|last FILE [--runs-db PATH]
    mpmlab experiment import FILE [--runs-db PATH]

``run`` prints its progress on stderr (target, stage, time left), a compare table at the end, and
exits 0 when every target ran and every threshold held, 1 when a target failed, 99 when a
threshold failed (``mpmlab traffic --fail-on``'s code), 130 after Ctrl-C (everything started is
stopped by pid first), 2 for a bad command line, a bad plan or a run store it cannot use.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import IO

from mpmcore.experiments import exports, report
from mpmcore.experiments.claims import add_claims_commands
from mpmcore.experiments.exports import add_report_commands
from mpmcore.experiments.model import Budget, Plan, PlanError, Progress, StoredRun, TargetSpec
from mpmcore.experiments.plan import MAX_ROUNDS, MAX_SLOTS, builtin_plans, default_plans_dir, find_plan, user_plans
from mpmcore.experiments.store import RunStore, StoreError, default_path
from mpmcore.experiments.targets import TargetError, available, check_budget, effective_config, parse_target
from mpmcore.traffic.thresholds import EXIT_THRESHOLDS

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_USAGE", "add_parser", "exit_status", "format_progress",
           "run"]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Usage(Exception):
    pass


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = subparsers.add_parser("experiment", help="run one traffic plan against several servers, record and compare",
                              description="Experiments: one traffic plan run against every target (the core's "
                                          "MPMs, real Apache, nginx, lighttpd), recorded in the run store.")
    sub = p.add_subparsers(dest="experiment_command", metavar="list|show|run|claims|report|export|import")
    sub.required = True

    def plans_opt(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--plans", metavar="DIR", help=f"your own plans (default {default_plans_dir()})")

    ls = sub.add_parser("list", help="the built-in plans and yours")
    plans_opt(ls)
    ls.set_defaults(experiment_func=cmd_list)

    def target_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("plan", metavar="NAME|FILE", help="a built-in plan's name, one of yours, or a TOML file")
        sp.add_argument("--targets", metavar="T1,T2,...",
                        help="instead of the plan's: core:MPM, apache:MPM, nginx, lighttpd, attach:URL")
        sp.add_argument("--slots", type=int, metavar="N", help="the budget's request slots instead of the plan's")
        plans_opt(sp)

    sh = sub.add_parser("show", help="a plan and the configuration each target would get")
    target_opts(sh)
    sh.set_defaults(experiment_func=cmd_show)

    r = sub.add_parser("run", help="run a plan, record it into the run store, print the comparison")
    target_opts(r)
    r.add_argument("--rounds", type=int, metavar="N", help=f"rounds instead of the plan's (1-{MAX_ROUNDS})")
    r.add_argument("--out", metavar="DIR", help="also write the exports (HTML report, JSON, CSV, HDR logs) here")
    r.add_argument("--runs-db", metavar="PATH", help="the run store (default: the user's data directory)")
    r.add_argument("--quiet", action="store_true", help="no progress on stderr")
    r.set_defaults(experiment_func=cmd_run)
    add_claims_commands(sub)  # mpmlab experiment claims [--run-all] (claims.py)
    add_report_commands(sub)  # mpmlab experiment report|export|import (exports.py)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    func: Callable[[argparse.Namespace], int] = args.experiment_func
    try:
        return func(args)
    except (_Usage, PlanError, TargetError) as e:
        print(f"mpmlab experiment: {e}", file=sys.stderr)
        return EXIT_USAGE


# -- helpers --------------------------------------------------------------------------------------
def _plan_and_targets(args: argparse.Namespace) -> tuple[Plan, list[TargetSpec], Budget]:
    plan = find_plan(args.plan, args.plans)
    targets = list(plan.targets)
    if args.targets:
        targets = []
        for part in args.targets.split(","):
            if part.strip():
                try:
                    targets.append(parse_target(part))
                except TargetError as e:
                    raise _Usage(f"--targets: {e}") from None
        if not targets:
            raise _Usage("--targets: no target given")
    budget = plan.budget
    if args.slots is not None:
        if not 1 <= args.slots <= MAX_SLOTS:
            raise _Usage(f"--slots must be between 1 and {MAX_SLOTS}, got {args.slots}")
        if args.slots % budget.processes:
            raise _Usage(f"--slots must be a multiple of the budget's processes ({budget.processes}), "
                         f"got {args.slots}")
        budget = dataclasses.replace(budget, slots=args.slots)
    for spec in targets:
        problem = check_budget(spec, budget, plan.server_directives)
        if problem:
            raise _Usage(problem)
    return plan, targets, budget


def _dur(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


# -- list, show -----------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    print("built-in plans:")
    for p in builtin_plans():
        claim = f"  [claim: {p.claim}]" if p.claim else ""
        print(f"  {p.name:<28} {_dur(p.duration * p.rounds * len(p.targets)):>7}  {p.title}{claim}")
    d = Path(args.plans) if args.plans else default_plans_dir()
    mine = user_plans(d)
    print(f"your plans ({d}):" if mine else f"your plans: none in {d}")
    for item in mine:
        if isinstance(item, PlanError):
            print(f"  (broken) {item}")
        else:
            print(f"  {item.name:<28} {_dur(item.duration * item.rounds * len(item.targets)):>7}  {item.title}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    plan, targets, budget = _plan_and_targets(args)
    print(f"{plan.name}: {plan.title}")
    if plan.description:
        print("  " + " ".join(plan.description.split()))
    print(f"  from {plan.path or 'the built-ins'}; {plan.rounds} round(s), warm-up {plan.warmup:g} s, "
          f"{plan.duration:g} s per target per round" + (f", thresholds {plan.thresholds}" if plan.thresholds else ""))
    print(f"  budget: {budget.slots} slots, {budget.processes} processes, KeepAliveTimeout "
          f"{budget.keepalive_timeout:g} s, RequestReadTimeout {budget.request_read_timeout}")
    for st in plan.stages:
        print(f"  stage {st.name} ({st.duration:g} s):")
        for use in st.mix:
            params = ", ".join(f"{k}={v}" for k, v in use.params.items())
            print(f"    {use.name}: {use.pattern}" + (f" ({params})" if params else ""))
    print("targets:")
    for spec in targets:
        cfg = effective_config(spec, budget, plan)
        why = available(spec)
        print(f"  {spec.name}" + (f"  ({cfg.version})" if cfg.version else "") + (f"  SKIPPED: {why}" if why else ""))
        for k, v in cfg.settings.items():
            print(f"    {k} {v}")
        for label, reason in cfg.not_comparable.items():
            print(f"    not comparable: {label}: {reason}")
    return 0


# -- run ------------------------------------------------------------------------------------------
def format_progress(p: Progress) -> str:
    where = f"round {p.round}/{p.rounds}, target {p.target_index + 1}/{p.targets}"
    if p.state in ("done", "failed") and not p.target:
        return f"experiment {p.message or p.state}"
    what = {"starting": "starting", "stopping": "stopping", "failed": f"not run: {p.message}"}.get(p.state)
    if what is None:
        what = f"{p.stage or p.state} {p.elapsed:.0f}/{p.target_seconds:g} s"
    return f"[{where}] {p.target}: {what}  ({_dur(p.seconds_left)} left)"


class _ProgressPrinter:
    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last_key: tuple[str, str, str] | None = None
        self.last_time = 0.0

    def __call__(self, p: Progress) -> None:
        key = (p.target, p.stage, p.state)
        now = time.monotonic()
        if self.tty:
            self.out.write("\r\x1b[K" + format_progress(p))
            if key != self.last_key and p.state in ("failed", "stopping", "done"):
                self.out.write("\n")
            self.out.flush()
        elif key != self.last_key or now - self.last_time >= 5.0:
            print(format_progress(p), file=self.out, flush=True)
            self.last_time = now
        self.last_key = key


def print_comparison(run: StoredRun, store: RunStore, out: IO[str]) -> None:
    """The compare table and each target's configuration (``report``)."""
    cmp = report.compare(run, store)
    print(report.format_table(cmp), file=out)
    print(report.format_configs(cmp), file=out)


def exit_status(run: StoredRun) -> int:
    if run.meta.status == "stopped":
        return EXIT_INTERRUPTED
    if run.meta.status != "complete" or any(t.status == "failed" for t in run.targets):
        return EXIT_FAILED
    if any(t.thresholds_failed for t in run.targets):
        return EXIT_THRESHOLDS
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from mpmcore.experiments.runner import run_experiment

    plan, targets, budget = _plan_and_targets(args)
    if args.rounds is not None and not 1 <= args.rounds <= MAX_ROUNDS:
        raise _Usage(f"--rounds must be between 1 and {MAX_ROUNDS}, got {args.rounds}")
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _Usage(f"--out {out_dir}: {e.strerror or e}") from None
    db = Path(args.runs_db) if args.runs_db else default_path()
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        store = RunStore(db)
    except (StoreError, OSError) as e:
        raise _Usage(f"--runs-db {db}: {e}") from None
    stop = threading.Event()
    interrupted = False

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupted
        if interrupted:  # a second Ctrl-C: do not wait for the patterns' figures, stop now
            raise KeyboardInterrupt
        interrupted = True
        stop.set()
        print("\nmpmlab experiment: stopping (everything started is stopped by pid; Ctrl-C again to hurry)...",
              file=sys.stderr)

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        progress = None if args.quiet else _ProgressPrinter(sys.stderr)
        result = run_experiment(plan, store=store, targets=targets, rounds=args.rounds, budget=budget,
                                on_progress=progress, stop=stop)
    except KeyboardInterrupt:  # the second Ctrl-C: every target was stopped by pid on the way out
        store.close()
        print("mpmlab experiment: interrupted; the run is stored as stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, old)
    try:
        print(f"run {result.meta.id} ({result.meta.status}) in {db}")
        for tr in result.targets:
            if tr.status in ("skipped", "failed"):
                print(f"  {tr.target} (round {tr.round}): {tr.status}: {tr.message}")
            for line in tr.thresholds_failed:
                print(f"  {tr.target} (round {tr.round}): threshold FAILED: {line}")
        print_comparison(result, store, sys.stdout)
        if out_dir is not None:
            paths = exports.write_exports(result.meta.id, store, out_dir)
            print(f"exports: {len(paths)} files in {out_dir}")
    finally:
        store.close()
    return EXIT_INTERRUPTED if interrupted else exit_status(result)
