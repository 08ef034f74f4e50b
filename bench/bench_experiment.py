"""Benchmark: the traffic generator's request rate under an experiment, against the rate it reaches
alone (issue 10's target: >= 0.9x).

The same nginx target (started by mpmcore.experiments.targets on a free loopback port, so that the
server is not the bottleneck: the generator is one Python process) gets the same steady closed-model
load twice per round: once from the generator alone (TrafficRunner, nothing else), once inside
``run_experiment`` (its recorder polling the status page 10 times a second, PSS/CPU of nginx's
process tree every second, everything written to a run store). Rounds alternate the order; the
figure is the median ratio.

    .venv/bin/python bench/bench_experiment.py [--seconds 5] [--rounds 3] [--clients 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mpmcore.experiments.plan import parse_plan  # noqa: E402
from mpmcore.experiments.runner import run_experiment  # noqa: E402
from mpmcore.experiments.store import RunStore  # noqa: E402
from mpmcore.experiments.targets import parse_target, start  # noqa: E402
from mpmcore.traffic import TrafficRunner  # noqa: E402

PLAN = """
name = "bench"
targets = ["nginx"]
[budget]
slots = 64
processes = 1
[[stage]]
name = "steady"
duration = {seconds}
  [[stage.pattern]]
  pattern = "steady"
  clients = {clients}
  path = "/index.html"
"""


def alone(plan_text: str, seconds: float, clients: int, workdir: Path) -> float:
    plan = parse_plan(plan_text, "bench.toml")
    with start(parse_target("nginx"), plan.budget, workdir, plan) as t, TrafficRunner() as runner:
        async def go() -> float:
            async with await runner.client() as tc:
                pid = await tc.start("steady", target=t.url, clients=clients, path="/index.html",
                                     duration=seconds + 5)
                await asyncio.sleep(seconds)
                info = await tc.stop(pid)
                assert info.total is not None
                return info.total.rps
        return asyncio.run(go())


def in_experiment(plan_text: str, workdir: Path) -> float:
    with RunStore(workdir / "runs.sqlite3") as store:
        run = run_experiment(parse_plan(plan_text, "bench.toml"), store=store, workdir=workdir)
        (tr,) = run.targets
        assert tr.status == "complete", tr.message
        return float(tr.patterns[0].total["rps"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=32)
    args = ap.parse_args()
    text = PLAN.format(seconds=args.seconds, clients=args.clients)
    ratios = []
    with tempfile.TemporaryDirectory(prefix="mpmlab-bench-exp-") as d:
        for r in range(args.rounds):
            wd = Path(d) / f"r{r}"
            if r % 2 == 0:
                a = alone(text, args.seconds, args.clients, wd / "alone")
                e = in_experiment(text, wd / "exp")
            else:
                e = in_experiment(text, wd / "exp")
                a = alone(text, args.seconds, args.clients, wd / "alone")
            ratios.append(e / a if a else 0.0)
            print(f"round {r + 1}: alone {a:,.0f} resp/s, in an experiment {e:,.0f} resp/s, ratio {e / a:.2f}")
    print(f"median ratio {statistics.median(ratios):.2f} (target >= 0.90) on {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
