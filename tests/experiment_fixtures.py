"""Stored experiment runs built through the real run store, with histograms recorded by a real
``hdrh.HdrHistogram`` from known values: the report and export tests assert on what they put in."""

from __future__ import annotations

import contextlib
import os
import random
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import ROOT
from hdrh.histogram import HdrHistogram

from mpmcore.experiments.model import (
    EffectiveConfig,
    FrameRecord,
    LogLine,
    Mark,
    PatternResult,
    PatternSecond,
    SecondSample,
)
from mpmcore.experiments.plan import default_plans_dir
from mpmcore.experiments.store import RunStore
from mpmcore.procs import terminate
from mpmcore.sources.grid import GRID_HEADER, GRID_MAGIC, GRID_VERSION
from mpmcore.traffic.limits import HIST_HIGHEST_US, HIST_LOWEST_US, HIST_SIGNIFICANT_FIGURES

HIST = (HIST_LOWEST_US, HIST_HIGHEST_US, HIST_SIGNIFICANT_FIGURES)
PLAN = """name = "report-test"
title = "Report test"
targets = ["core:event", "nginx", "lighttpd"]
rounds = 3
[[stage]]
name = "load"
duration = "10s"
  [[stage.pattern]]
  pattern = "browsers"
  [[stage.pattern]]
  pattern = "cpu"
"""


def hist(values_us: list[int]) -> HdrHistogram:
    h = HdrHistogram(*HIST)
    for v in values_us:
        h.record_value(v)
    return h


def encoded(values_us: list[int]) -> str:
    return hist(values_us).encode().decode("ascii")


def figures(requests: int, responses: int, seconds: float, errors: dict[str, int] | None = None,
            status5xx: int = 0, latency: list[int] | None = None, bytes_in: int = 0) -> dict:
    """A ``Figures.to_json()``-shaped dict."""
    errs = {k: 0 for k in ("refused", "reset", "timeout", "closed", "tls", "protocol", "cap", "other")}
    errs.update(errors or {})
    lat = latency or []
    summ = None
    if lat:
        summ = {"p50": 0, "p90": 0, "p99": 0, "p99.9": 0, "max": max(lat) / 1000, "mean": sum(lat) / len(lat) / 1000,
                "count": len(lat)}
    return {"requests": requests, "responses": responses, "bytes_in": bytes_in, "bytes_out": 0, "arrivals": 0,
            "dropped": 0, "late": 0, "reconnects": 0, "connections_opened": 0, "throttled": 0,
            "status": {"1xx": 0, "2xx": responses - status5xx, "3xx": 0, "4xx": 0, "5xx": status5xx},
            "errors": errs, "errors_total": sum(errs.values()), "seconds": seconds, "rps": responses / seconds,
            "requests_per_s": requests / seconds, "latency_ms": summ, "corrected_latency_ms": None, "ttfb_ms": None,
            "connect_ms": None}


def grid(rows: int, cols: int, letters: bytes, seq: int) -> bytes:
    """A binary grid frame in mpmcore.sources.grid's layout (event MPM id 2)."""
    head = GRID_HEADER.pack(GRID_MAGIC, GRID_VERSION, 2, 0, seq, 1.0e12 + seq, 1, rows, cols, cols, 0)
    return b"".join((head, letters, bytes(rows * cols), bytes([1] * rows), struct.pack(f"<{rows}I", *range(100, 100 + rows)),
                     struct.pack(f"<{rows}I", *([1] * rows))))


@dataclass
class BuiltRun:
    run_id: int
    values: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (target, label) -> all latencies (us)
    corrected: dict[str, list[int]] = field(default_factory=dict)  # target -> corrected values of "poll"
    target_runs: dict[tuple[str, int], int] = field(default_factory=dict)  # (target, round) -> target run id


#: core:event's responses per round over 10 s: req/s 100, 120, 90 for "browsers" + "poll"
CORE_RESPONSES = (1000, 1200, 900)


def build_run(store: RunStore, seed: int = 7, frames: int = 20, name: str = "report-test") -> BuiltRun:
    """A 3-round run of core:event (two patterns, one open-model), nginx (cannot run "cpu": not
    comparable; no scoreboard) and lighttpd (skipped). Known numbers, see the asserts in
    tests/unit/test_experiment_report.py."""
    rnd = random.Random(seed)
    run_id = store.begin_run("experiment", name, "Report test", PLAN, ["core:event", "nginx", "lighttpd"],
                             host={"cpus": "2"}, notes="")
    built = BuiltRun(run_id)
    for r in (1, 2, 3):
        for target in ("core:event", "nginx", "lighttpd"):
            if target == "lighttpd":
                tid = store.begin_target(run_id, target, r)
                store.end_target(tid, "skipped", message="lighttpd is not installed: apt-get install lighttpd")
                continue
            nc = {"cpu": "nginx has no CPU-heavy handler"} if target == "nginx" else {}
            cfg = EffectiveConfig(target=target, kind="core" if target == "core:event" else "nginx",
                                  mpm="event" if target == "core:event" else None, version=f"{target} 1.0",
                                  settings={"MaxRequestWorkers": "64", "ThreadsPerChild": "32"} if target == "core:event"
                                  else {"worker_processes": "2", "worker_connections": "32"},
                                  config_text=f"# {target} config\nKeepAliveTimeout 5\n", url="http://127.0.0.1:1",
                                  not_comparable=nc)
            tid = store.begin_target(run_id, target, r, cfg)
            built.target_runs[(target, r)] = tid
            total = CORE_RESPONSES[r - 1] if target == "core:event" else 500 * r
            b_resp, p_resp = total * 3 // 4, total - total * 3 // 4
            b_vals = [rnd.randint(500, 20_000) for _ in range(300)]
            p_vals = [rnd.randint(1_000, 5_000) for _ in range(200)]
            p_cor = [v + rnd.randint(0, 50_000) for v in p_vals]
            c_vals = [rnd.randint(50_000, 90_000) for _ in range(50)]
            built.values.setdefault((target, "browsers"), []).extend(b_vals)
            built.values.setdefault((target, "poll"), []).extend(p_vals)
            built.corrected.setdefault(target, []).extend(p_cor)
            built.values.setdefault((target, "cpu"), []).extend(c_vals)
            errs = {"timeout": r, "reset": 1} if target == "core:event" else {}
            pats = [PatternResult(label="browsers", pattern="browsers", stage="load", params={"clients": 50},
                                  total=figures(b_resp + 5, b_resp, 10.0, errs, status5xx=2, latency=b_vals,
                                                bytes_in=b_resp * 100),
                                  histograms={"latency": encoded(b_vals), "corrected": encoded([])}),
                    PatternResult(label="poll", pattern="ajax", stage="load", params={},
                                  total=figures(p_resp, p_resp, 10.0, latency=p_vals),
                                  histograms={"latency": encoded(p_vals), "corrected": encoded(p_cor)}),
                    PatternResult(label="cpu", pattern="cpu", stage="load", params={},
                                  total=figures(50, 50 if target == "core:event" else 0, 10.0,
                                                latency=c_vals if target == "core:event" else None,
                                                status5xx=0),
                                  histograms={"latency": encoded(c_vals if target == "core:event" else [])},
                                  comparable=target != "nginx")]
            samples = []
            for s in range(12):
                conns = 0 if s < 2 else 40 + r
                samples.append(SecondSample(
                    t=float(s), stage="warmup" if s < 2 else "load", rps=10.0 * s, errors=s % 2,
                    busy=(s * r) % 30 if target == "core:event" else None,
                    processes=2 if target == "core:event" else 3,
                    threads=(60 + r if s == 5 else 64) if target == "core:event" else None,
                    pss_bytes=(10_000_000 + (s * 100_000 * r if s >= 2 else 0)),
                    cpu_seconds=0.5 + s * 0.1 * r, client_connections=conns,
                    patterns={"browsers": PatternSecond(rps=7.5 * s, errors=s % 2, p50_ms=2.0 + s, p99_ms=9.0 + s,
                                                        connections=conns),
                              "poll": PatternSecond(rps=2.5 * s, errors=0, p50_ms=1.0, p99_ms=3.0)}))
            store.add_samples(tid, samples)
            store.add_marks(tid, [Mark(0.0, "warmup", "warm-up"), Mark(2.0, "stage", "load")])
            store.add_logs(tid, [LogLine(0.5, "error_log", f"[mpm_event:notice] {target} round {r} resuming")])
            if target == "core:event":
                store.add_frames(tid, [FrameRecord(t=i / 10, grid=grid(4, 8, bytes(rnd.choice(b"\x02\x03\x04\x05")
                                                                             for _ in range(32)), i))
                                       for i in range(frames)])
            store.end_target(tid, "complete", patterns=pats)
    store.end_run(run_id, "complete")
    return built


@contextlib.contextmanager
def user_plans_dir(tmp: Path, plans: dict[str, str]) -> Iterator[Path]:
    """The user's plans directory (plan.default_plans_dir) under ``tmp``, holding ``plans`` (file
    stem -> TOML), while the block runs: XDG_CONFIG_HOME points under ``tmp`` (a dashboard started
    in the block inherits it), and is put back after."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CONFIG_HOME", str(tmp / "config"))
    try:
        where = default_plans_dir()
        where.mkdir(parents=True)
        for stem, text in plans.items():
            (where / f"{stem}.toml").write_text(text)
        yield where
    finally:
        mp.undo()


def experiment_cli(*args: str, stderr: int | object = subprocess.PIPE) -> subprocess.Popen[str]:
    """``mpmlab experiment ARGS`` as a user types it, in its own process (stopped by the caller)."""
    return subprocess.Popen([sys.executable, "-m", "mpmcore", "experiment", *args], text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=stderr)


def run_experiment_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``mpmlab experiment ARGS`` to its end; past ``timeout`` s it is stopped by its pid (SIGTERM,
    which stops what it started, then SIGKILL) and the test fails."""
    proc = experiment_cli(*args)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        terminate(proc, 10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
