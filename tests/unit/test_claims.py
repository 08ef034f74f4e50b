"""The claims' verdict rules on stored runs written through the real run store (a tmp file): each
rule's holds / holds partly / does not hold here boundaries, "not run" when its targets did not run,
and the latest verdict of each claim."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

from mpmcore.experiments import claims
from mpmcore.experiments.claims import CLAIMS, STARVED_MS, latest_results, verdict_for
from mpmcore.experiments.model import (
    EffectiveConfig,
    FrameRecord,
    Mark,
    PatternResult,
    PatternSecond,
    SecondSample,
    StoredRun,
)
from mpmcore.experiments.store import RunStore

MIB = 1 << 20


@pytest.fixture
def store(tmp_path):
    s = RunStore(tmp_path / "runs.sqlite3")
    yield s
    s.close()


def hist(values_ms: list[float]) -> str:
    h = HdrHistogram(1, 60_000_000, 3)
    for v in values_ms:
        h.record_value(int(v * 1000))
    enc = h.encode()
    return enc.decode() if isinstance(enc, bytes) else str(enc)


def pat(label: str, pattern: str = "steady", stage: str = "s", *, rps: float = 0.0, p50: float | None = None,
        requests: int = 0, responses: int | None = None, errors: int = 0, corrupted: int = 0, reconnects: int = 0,
        cp50: float | None = None, latencies: list[float] | None = None, **params: Any) -> PatternResult:
    lat = None if p50 is None else {"p50": p50, "p90": p50, "p99": p50, "p99.9": p50, "max": p50, "mean": p50,
                                    "count": responses or requests}
    cor = None if cp50 is None else dict(lat or {}, p50=cp50)
    total = {"requests": requests, "responses": requests - errors if responses is None else responses,
             "errors_total": errors, "errors": {"timeout": errors}, "rps": rps, "latency_ms": lat,
             "corrected_latency_ms": cor, "reconnects": reconnects, "corrupted": corrupted}
    return PatternResult(label=label, pattern=pattern, stage=stage, params=params, total=total,
                         histograms={} if latencies is None else {"latency": hist(latencies)})


def sample(t: float, stage: str = "s", *, k: int | None = None, busy: int | None = None, parked: int | None = None,
           pss: int | None = None, conns: int = 0, patterns: dict[str, PatternSecond] | None = None) -> SecondSample:
    return SecondSample(t=t, stage=stage, rps=0.0, errors=0, states=None if k is None else {"K": k, "_": 0},
                        busy=busy, parked=parked, pss_bytes=pss, client_connections=conns, patterns=patterns or {})


@dataclass
class T:
    target: str
    patterns: list[PatternResult]
    samples: list[SecondSample] = field(default_factory=list)
    round: int = 1
    slots: int | None = None
    settings: dict[str, str] = field(default_factory=dict)
    status: str = "complete"
    message: str = ""
    frames: list[float] = field(default_factory=list)  # frame times; a "stage" mark at 0


def write(store: RunStore, plan: str, targets: list[T], status: str = "complete") -> StoredRun:
    run_id = store.begin_run("experiment", plan, plan, "", sorted({t.target for t in targets}))
    for t in targets:
        kind, _, mpm = t.target.split("?")[0].partition(":")
        settings = dict(t.settings)
        if t.slots is not None:
            settings["MaxRequestWorkers"] = str(t.slots)
        cfg = EffectiveConfig(target=t.target, kind=kind, mpm=mpm or None, version="test",  # type: ignore[arg-type]
                              settings=settings)
        tid = store.begin_target(run_id, t.target, t.round, cfg)
        store.add_samples(tid, t.samples)
        if t.frames:
            store.add_marks(tid, [Mark(t=0.0, kind="stage", label="s")])
            store.add_frames(tid, [FrameRecord(t=x, grid=b"grid") for x in t.frames])
        store.end_target(tid, t.status, t.patterns, message=t.message)  # type: ignore[arg-type]
    store.end_run(run_id, status)  # type: ignore[arg-type]
    return store.load(run_id)


def judge(store: RunStore, key: str, targets: list[T]):
    run = write(store, CLAIMS[key].plan, targets)
    [r] = verdict_for(run, store)
    assert r.claim == key and r.run_id == run.meta.id and r.number == CLAIMS[key].number
    return r


# -- the registry ----------------------------------------------------------------------------------
def test_nine_claims_in_the_essays_order_each_with_its_packaged_plan():
    assert [c.number for c in CLAIMS.values()] == list(range(1, 10))
    root = resources.files("mpmcore.experiments") / "builtin"
    for c in CLAIMS.values():
        assert c.plan == f"claim-{c.key}" and c.sentence.endswith(".") and c.conditions
        plan = tomllib.loads((root / f"{c.plan}.toml").read_text())
        assert plan["name"] == c.plan and plan["claim"] == c.key


def test_latest_results_not_run_then_the_newest_complete_run(store):
    results = latest_results(store)
    assert [r.number for r in results] == list(range(1, 10))
    assert all(r.verdict == "not run" and r.run_id is None for r in results)
    assert "mpmlab experiment run claim-prefork-queues" in results[1].why
    q = [T("core:prefork", [pat("queue", requests=100, p50=600.0, path="/sleep?ms=200", clients=12)],
           [sample(1, busy=4)], slots=4)]
    done = write(store, "claim-prefork-queues", q)
    write(store, "claim-prefork-queues", q, status="incomplete")  # newer, but not complete
    r = latest_results(store)[1]
    assert r.run_id == done.meta.id and r.verdict == "holds"


def test_a_run_of_another_plan_has_no_verdict_and_a_broken_one_says_not_run(store):
    run = write(store, "browsers", [T("core:event", [pat("browsers")])])
    assert verdict_for(run, store) == []
    # a claim-4 run whose probe pattern is missing (an older plan): not run, with the reason
    r = judge(store, "worker-keepalive-holds-threads", [T("core:worker", [pat("browsers")], slots=16)])
    assert r.verdict == "not run" and "'probe'" in r.why


# -- 1 ---------------------------------------------------------------------------------------------
def single(target: str, rps: tuple[float, float], p50: float = 0.5) -> list[T]:
    return [T(target, [pat("single", rps=v, p50=p50, requests=int(v))], round=i + 1) for i, v in enumerate(rps)]


@pytest.mark.parametrize("prefork,verdict", [
    ((1000, 1010), "holds"),  # beyond the spread (10) of both
    ((905, 925), "holds partly"),  # 15 more than worker's 900: within prefork's spread of 20
    ((700, 710), "does not hold here"),
])
def test_claim1_prefork_single(store, prefork, verdict):
    r = judge(store, "prefork-faster-single", single("core:prefork", prefork) + single("core:worker", (895, 905))
              + single("core:event", (790, 800)))
    assert r.verdict == verdict, r.why
    assert r.figures["core:prefork req/s"] == sum(prefork) / 2 and r.figures["core:worker req/s"] == 900
    assert "core:worker" in r.why and "apache:prefork req/s" not in r.figures  # Apache did not run


def test_claim1_apache_too_and_not_run_without_a_threaded_mpm(store):
    both = (single("core:prefork", (1000, 1000)) + single("core:event", (800, 800))
            + single("apache:prefork", (500, 500)) + single("apache:worker", (900, 900)))
    assert judge(store, "prefork-faster-single", both).verdict == "holds partly"  # core yes, Apache no
    alone = single("core:prefork", (1000, 1000)) + [T("core:worker", [], status="failed", message="would not start")]
    r = judge(store, "prefork-faster-single", alone)
    assert r.verdict == "not run" and "would not start" in r.why


# -- 2 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("busy,p50,verdict", [
    (4, 600.0, "holds"), (4, 300.0, "holds"),  # 1.5 x 200 ms: the boundary
    (4, 250.0, "holds partly"), (3, 600.0, "holds partly"), (2, 210.0, "does not hold here")])
def test_claim2_prefork_queues(store, busy, p50, verdict):
    r = judge(store, "prefork-queues", [T("core:prefork", [pat("queue", requests=90, p50=p50, path="/sleep?ms=200",
                                                                clients=12, keepalive=False, model="closed")],
                                        [sample(1, busy=busy - 1), sample(2, busy=busy)], slots=4)])
    assert r.verdict == verdict, r.why
    assert r.figures["peak busy"] == busy and r.figures["server work ms"] == 200 and r.figures["slots"] == 4
    assert r.figures["concurrent requests"] == 12


# -- 3 ---------------------------------------------------------------------------------------------
def ram(target: str, pss_mib: tuple[float, ...], slots: int = 32) -> list[T]:
    return [T(target, [pat("hold")], [sample(1, pss=int(v * MIB // 2)), sample(2, pss=int(v * MIB))], round=i + 1,
              slots=slots) for i, v in enumerate(pss_mib)]


@pytest.mark.parametrize("prefork,verdict", [
    ((320, 330), "holds"), ((96, 96), "holds"),  # 1.5 x 64: the boundary
    ((80, 80), "holds partly"), ((40, 40), "does not hold here")])
def test_claim3_prefork_ram(store, prefork, verdict):
    r = judge(store, "prefork-ram", ram("core:prefork", prefork) + ram("core:worker", (64, 64))
              + ram("core:event", (50, 50)))
    assert r.verdict == verdict, r.why
    # per slot: the peak PSS over the 32 slots; the threaded MPM compared is the larger
    assert r.figures["core:worker PSS per slot bytes"] == 2 * MIB
    assert r.figures["core prefork/threaded ratio"] == round(sum(prefork) / 2 / 64, 2)


# -- 4, 5, 6 -----------------------------------------------------------------------------------------
def hold(target: str, k: int, slow: int, fast: int, timeouts: int = 0, parked: int | None = None) -> T:
    lat = [2 * STARVED_MS] * slow + [3.0] * fast
    probe = pat("probe", requests=slow + fast + timeouts, errors=timeouts, latencies=lat)
    return T(target, [pat("browsers", "browsers"), probe],
             [sample(0.5, "warmup", k=16), sample(1, k=max(0, k - 2), parked=parked), sample(2, k=k, parked=parked)],
             slots=16)


@pytest.mark.parametrize("k,slow,fast,timeouts,verdict", [
    (16, 6, 1, 3, "holds"), (16, 3, 5, 2, "holds"),  # 5 of 10 starved: the boundary
    (16, 1, 9, 0, "holds partly"), (10, 8, 2, 0, "holds partly"), (3, 0, 10, 0, "does not hold here")])
def test_claim4_worker_holds_threads(store, k, slow, fast, timeouts, verdict):
    r = judge(store, "worker-keepalive-holds-threads", [hold("core:worker", k, slow, fast, timeouts)])
    assert r.verdict == verdict, r.why
    assert r.figures["core:worker peak K"] == k and r.figures["core:worker slots"] == 16
    assert r.figures["core:worker probe starved"] == slow + timeouts
    assert r.figures["core:worker probe requests"] == slow + fast + timeouts


def test_claim4_a_real_apaches_status_page_starved_too_counts_as_threads_held(store):
    # Apache's mod_status needs a free thread: while every one is in K, no frame comes (10.2 s here)
    # and the K count read is from before; the stall itself says the threads were held
    stalled = hold("apache:worker", 0, 8, 2)
    stalled.frames = [0.1, 0.2, 10.4, 10.5]
    r = judge(store, "worker-keepalive-holds-threads", [stalled])
    assert r.verdict == "holds", r.why
    assert r.figures["apache:worker status stall s"] == 10.2 and "unanswered for 10.2 s" in r.why
    steady = hold("apache:worker", 0, 8, 2)
    steady.frames = [x / 10 for x in range(100)]  # a frame every 0.1 s: no stall, K really 0
    assert judge(store, "worker-keepalive-holds-threads", [steady]).verdict == "holds partly"
    # under event a stalled status page is not "freed"
    ev = hold("apache:event", 0, 8, 2)
    ev.frames = stalled.frames
    assert judge(store, "event-frees-threads", [ev]).verdict == "does not hold here"


def test_claim4_without_a_histogram_reads_the_probes_median(store):
    probe = pat("probe", requests=10, p50=3000.0)
    r = judge(store, "worker-keepalive-holds-threads",
              [T("core:worker", [probe], [sample(1, k=16)], slots=16)])
    assert r.verdict == "holds" and r.figures["core:worker probe starved"] == 10


@pytest.mark.parametrize("k,slow,fast,verdict", [
    (0, 0, 10, "holds"), (0, 1, 9, "holds"),  # 1 of 10: the boundary of "served promptly"
    (0, 3, 7, "holds partly"), (16, 0, 10, "holds partly"), (16, 8, 2, "does not hold here")])
def test_claim5_event_frees_threads(store, k, slow, fast, verdict):
    r = judge(store, "event-frees-threads", [hold("core:event", k, slow, fast, parked=22)])
    assert r.verdict == verdict, r.why
    assert r.figures["core:event peak parked"] == 22 and r.figures["core:event peak K"] == k


def test_claim5_apache_event_too(store):
    r = judge(store, "event-frees-threads", [hold("core:event", 0, 0, 10), hold("apache:event", 16, 8, 2)])
    assert r.verdict == "holds partly" and "apache:event: K slots at peak 16 of 16" in r.why


def test_claim6_tls_event_both_modes(store):
    old, new = "core:event?tls_mode=pre-2.4.7", "core:event"
    r = judge(store, "tls-event", [hold(old, 16, 8, 2), hold(new, 0, 0, 10, parked=20)])
    assert r.verdict == "holds", r.why
    assert r.why.startswith("before 2.4.7, core:event?tls_mode=pre-2.4.7: K slots at peak 16")
    assert judge(store, "tls-event", [hold(old, 0, 0, 10), hold(new, 0, 0, 10)]).verdict == "holds partly"
    assert judge(store, "tls-event", [hold(old, 0, 0, 10), hold(new, 16, 8, 2)]).verdict == "does not hold here"
    r = judge(store, "tls-event", [hold(new, 0, 0, 10), T(old, [], status="failed", message="no TLS here")])
    assert r.verdict == "not run" and "no TLS here" in r.why


# -- 7 ---------------------------------------------------------------------------------------------
def model_run(target: str, busy: dict[str, int], reconnects: int = 0) -> T:
    ps = [pat("slowloris", "slowloris", "slowloris", connections=24, interval=1.0, reconnects=reconnects),
          pat("ajax", "ajax", "ajax", clients=24, interval=1.0),
          pat("browsers", "browsers", "browsers", clients=4, connections_per_browser=6)]
    ss = [sample(i + 1, st, busy=b) for i, (st, b) in enumerate(busy.items())]
    return T(target, ps, ss, slots=48)


def test_claim7_concurrency_per_model(store):
    full = {"slowloris": 24, "ajax": 24, "browsers": 24}
    event = {"slowloris": 24, "ajax": 3, "browsers": 5}
    r = judge(store, "concurrency-per-model", [model_run("core:prefork", full, reconnects=40),
                                               model_run("core:worker", full),
                                               model_run("core:event", event)])
    assert r.verdict == "holds", r.why
    assert r.figures["core:event ajax peak busy"] == 3 and r.figures["core:event ajax connections"] == 24
    assert r.figures["core:prefork slowloris reconnects"] == 40
    assert "core:event (slots 48): slowloris 24/24, ajax 3/24, browsers 5/24" in r.why
    assert "without-RequestReadTimeout targets did not run" in r.why
    # with and without RequestReadTimeout: the server cuts slowloris connections only with it
    both = [model_run("core:worker", full, reconnects=48), model_run("core:event", event, reconnects=48),
            model_run("core:worker?request_read_timeout=off", full),
            model_run("core:event?request_read_timeout=off", event)]
    r = judge(store, "concurrency-per-model", both)
    assert r.verdict == "holds", r.why
    assert "cut by RequestReadTimeout: core:worker 48 with, 0 without, core:event 48 with, 0 without" in r.why
    both[3] = model_run("core:event?request_read_timeout=off", event, reconnects=5)  # cut without it too
    assert judge(store, "concurrency-per-model", both).verdict == "holds partly"
    # event holding a slot per polling client: partly
    r = judge(store, "concurrency-per-model", [model_run("core:worker", full), model_run("core:event", full)])
    assert r.verdict == "holds partly"
    # worker freeing slots, event holding them: nothing as the essay says
    r = judge(store, "concurrency-per-model", [model_run("core:worker", {"slowloris": 2, "ajax": 2, "browsers": 2}),
                                               model_run("core:event", {"slowloris": 2, "ajax": 24, "browsers": 24})])
    assert r.verdict == "does not hold here"


def test_claim7_a_stage_is_read_without_its_first_second(store):
    # the AJAX stage's first second still shows the slowloris stage's 24 R slots going away (run 7
    # of a claims suite under event): the peak is read from the seconds after it
    full = {"slowloris": 24, "ajax": 24, "browsers": 24}
    ev = model_run("core:event", {"slowloris": 24, "ajax": 3, "browsers": 5})
    ev.samples = [sample(1, "slowloris", busy=24), sample(2, "slowloris", busy=24),
                  sample(3, "ajax", busy=24), sample(4, "ajax", busy=2), sample(5, "ajax", busy=3),
                  sample(6, "browsers", busy=0), sample(7, "browsers", busy=5)]
    r = judge(store, "concurrency-per-model", [model_run("core:worker", full), ev])
    assert r.verdict == "holds", r.why
    assert r.figures["core:event ajax peak busy"] == 3 and r.figures["core:event slowloris peak busy"] == 24


# -- 8 ---------------------------------------------------------------------------------------------
def unsafe(target: str, bad: int, n: int = 200, pool: int = 0) -> T:
    settings = {"UnsafeFastCGIPool": str(pool)} if pool else {}
    return T(target, [pat("unsafe", requests=n, corrupted=bad)], slots=8, settings=settings)


@pytest.mark.parametrize("pre,worker,pooled,verdict", [
    (0, 37, 0, "holds"), (0, 1, 0, "holds"),  # one mixed-up answer is a broken module
    (0, 37, 2, "holds partly"), (0, 0, 0, "holds partly"), (3, 0, 5, "does not hold here")])
def test_claim8_unsafe_module(store, pre, worker, pooled, verdict):
    r = judge(store, "unsafe-module-threads", [unsafe("core:prefork", pre), unsafe("core:worker", worker),
                                               unsafe("core:worker?fcgi_pool=4", pooled, pool=4)])
    assert r.verdict == verdict, r.why
    assert r.figures["core:worker mixed-up"] == worker and r.figures["core:worker answers"] == 200
    assert f"core:worker?fcgi_pool=4: {pooled} of 200 answers mixed up" in r.why


def test_claim8_not_run_without_the_pool_target(store):
    r = judge(store, "unsafe-module-threads", [unsafe("core:prefork", 0), unsafe("core:worker", 5)])
    assert r.verdict == "not run" and r.figures["core:worker mixed-up"] == 5


# -- 9 ---------------------------------------------------------------------------------------------
def light(target: str, base_mib: float, idle_mib: float, rps: float, rnd: int = 1) -> T:
    ss = [sample(1, "baseline", pss=int(base_mib * MIB), conns=8),
          sample(5, "idle", pss=int(idle_mib * MIB), conns=208,
                 patterns={"idle-conns": PatternSecond(rps=0.0, errors=0, connections=200)})]
    return T(target, [pat("base", stage="baseline", rps=rps), pat("beside-idle", stage="idle", rps=rps)], ss,
             round=rnd)


def test_claim9_light_servers(store):
    r = judge(store, "light-servers", [light("apache:event", 40, 44, 3000), light("nginx", 4, 4.2, 5000),
                                       light("lighttpd", 2, 2.3, 4000)])
    assert r.verdict == "holds", r.why
    assert r.figures["apache:event PSS per idle connection bytes"] == round(4 * MIB / 200)
    assert r.figures["nginx req/s beside idle"] == 5000
    # lighttpd missing: the verdict from nginx, the reason in why
    r = judge(store, "light-servers", [light("apache:event", 40, 44, 3000), light("nginx", 4, 4.2, 2000),
                                       T("lighttpd", [], status="skipped",
                                         message="lighttpd is not installed: apt-get install lighttpd")])
    assert r.verdict == "holds partly" and "lighttpd not run: lighttpd is not installed" in r.why
    r = judge(store, "light-servers", [light("apache:event", 4, 4.2, 5000), light("nginx", 40, 44, 3000)])
    assert r.verdict == "does not hold here"
    r = judge(store, "light-servers", [light("nginx", 4, 4.2, 5000)])
    assert r.verdict == "not run"


def test_verdicts_read_medians_with_the_spread_over_rounds(store):
    # nginx's memory per connection better in one round, worse in the other: within the spread
    ts = [light("apache:event", 40, 44, 3000, 1), light("apache:event", 40, 44, 3000, 2),
          light("nginx", 4, 4.2, 3000, 1), light("nginx", 40, 48, 3000, 2)]
    r = judge(store, "light-servers", ts)
    assert r.verdict == "holds partly", r.why


def test_format_results_one_line_each_and_the_why(store):
    text = claims.format_results(latest_results(store))
    assert text.splitlines()[0].startswith("1. prefork is fastest one request at a time: NOT RUN (no run)")
    assert len(text.splitlines()) == 18


# -- what the claims' plans need of targets and sources ----------------------------------------------
def test_target_options_the_claims_use():
    from mpmcore.experiments.model import Budget
    from mpmcore.experiments.targets import RRT_OFF, TargetError, effective_config, parse_target

    pooled = parse_target("core:worker?fcgi_pool=4")
    assert effective_config(pooled, Budget(), version="t").settings["UnsafeFastCGIPool"] == "4"
    assert "UnsafeFastCGIPool" not in effective_config(parse_target("core:worker"), Budget(), version="t").settings
    off = parse_target("apache:event?request_read_timeout=off")
    assert effective_config(off, Budget(), version="t").settings["RequestReadTimeout"] == RRT_OFF == "header=0 body=0"
    for bad, why in (("nginx?fcgi_pool=4", "core:MPM only"), ("core:worker?fcgi_pool=3", "one of 1, 2, 4, 8"),
                     ("lighttpd?request_read_timeout=off", "core or Apache")):
        with pytest.raises(TargetError, match=why):
            parse_target(bad)


def test_core_source_without_a_server_is_a_failed_frame_not_an_exception():
    from mpmcore.sources.core import CoreSource, open_source
    src = open_source("mpmlab+shm:127.0.0.1:9")
    assert isinstance(src, CoreSource) and src.kind == "mpmlab"
    frame = src.poll()
    assert not frame.ok and "no scoreboard for 127.0.0.1:9" in (frame.error or "")
    src.close()


def test_claims_command_reads_the_store_and_never_creates_one(tmp_path, capsys):
    import argparse
    import json

    db = tmp_path / "none" / "runs.sqlite3"
    args = argparse.Namespace(runs_db=str(db), run_all=False, json=False, quiet=True)
    assert claims.cmd_claims(args) == 0
    out = capsys.readouterr().out
    assert out.count("NOT RUN") == 9 and not db.parent.exists()
    s = RunStore(tmp_path / "runs.sqlite3")
    write(s, "claim-unsafe-module-threads", [unsafe("core:prefork", 0), unsafe("core:worker", 9),
                                            unsafe("core:worker?fcgi_pool=4", 0, pool=4)])
    s.close()
    args = argparse.Namespace(runs_db=str(tmp_path / "runs.sqlite3"), run_all=False, json=True, quiet=True)
    assert claims.cmd_claims(args) == 0
    got = {r["claim"]: r for r in json.loads(capsys.readouterr().out)}
    assert got["unsafe-module-threads"]["verdict"] == "holds" and got["unsafe-module-threads"]["run_id"] == 1
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"not a database at all" * 100)
    args = argparse.Namespace(runs_db=str(bad), run_all=False, json=False, quiet=True)
    assert claims.cmd_claims(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("mpmlab experiment claims: --runs-db") and "not an mpmlab run store" in err
