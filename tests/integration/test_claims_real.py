"""The structural claims for real: their built-in plans run through the experiment runner against
the embedded core's MPMs into a tmp run store, and the verdicts come out as the essay says, read
from counts (slots held in K, parked connections, probe requests that waited, mixed-up answers),
never from speed."""

from __future__ import annotations

import pytest

from mpmcore.experiments.claims import CLAIMS, latest_results, verdict_for
from mpmcore.experiments.plan import find_plan
from mpmcore.experiments.runner import run_experiment
from mpmcore.experiments.store import RunStore
from mpmcore.experiments.targets import parse_target


@pytest.fixture
def store(tmp_path):
    s = RunStore(tmp_path / "runs.sqlite3")
    yield s
    s.close()


def run_claim(store: RunStore, key: str, targets: list[str], tmp_path):
    plan = find_plan(CLAIMS[key].plan)
    assert plan.claim == key
    run = run_experiment(plan, store=store, targets=[parse_target(t) for t in targets], workdir=tmp_path / key)
    assert run.meta.status == "complete", [(t.target, t.status, t.message) for t in run.targets]
    [result] = verdict_for(run, store)
    return result


def test_claim4_worker_threads_held_by_kept_alive_browsers_starve_the_probe(store, tmp_path):
    r = run_claim(store, "worker-keepalive-holds-threads", ["core:worker"], tmp_path)
    f = r.figures
    assert f["core:worker slots"] == 16 and f["core:worker peak K"] == 16, r.why  # every thread held in K
    probes = f["core:worker probe requests"]
    assert isinstance(probes, int) and probes >= 4
    assert isinstance(f["core:worker probe starved"], int) and f["core:worker probe starved"] >= probes / 2, r.why
    assert r.verdict == "holds", r.why


def test_claim5_event_parks_the_same_browsers_and_serves_the_probe(store, tmp_path):
    r = run_claim(store, "event-frees-threads", ["core:event"], tmp_path)
    f = r.figures
    assert f["core:event peak K"] == 0, r.why  # no thread waits on a kept-alive connection
    assert isinstance(f["core:event peak parked"], int) and f["core:event peak parked"] >= 8, r.why
    assert f["core:event probe starved"] == 0 and isinstance(f["core:event probe requests"], int)
    assert f["core:event probe requests"] >= 8, r.why
    assert r.verdict == "holds", r.why


def test_claim8_unsafe_module_mixed_up_under_worker_only_and_the_pool_fixes_it(store, tmp_path):
    r = run_claim(store, "unsafe-module-threads", ["core:prefork", "core:worker", "core:worker?fcgi_pool=4"],
                  tmp_path)
    f = r.figures
    assert f["core:prefork mixed-up"] == 0 and f["core:worker?fcgi_pool=4 mixed-up"] == 0, r.why
    assert isinstance(f["core:worker mixed-up"], int) and f["core:worker mixed-up"] > 0, r.why
    assert all(isinstance(f[f"{t} answers"], int) and f[f"{t} answers"] > 0  # type: ignore[operator]
               for t in ("core:prefork", "core:worker", "core:worker?fcgi_pool=4"))
    assert r.verdict == "holds", r.why
    # the claims page's reading: the newest complete run of each claim's plan
    latest = {x.claim: x for x in latest_results(store)}
    assert latest["unsafe-module-threads"].run_id == r.run_id and latest["prefork-queues"].verdict == "not run"
