"""A short experiment against the embedded core's three MPMs, into a run store in tmp_path: every
target's samples, grid frames that decode, PSS of its process tree, per-pattern results with HDR
histograms, stage marks; and `mpmlab experiment run`'s exit statuses."""

from __future__ import annotations

import signal

import psutil
import pytest
from conftest import wait_for
from experiment_fixtures import experiment_cli, run_experiment_cli
from hdrh.histogram import HdrHistogram

from mpmcore.experiments.plan import parse_plan
from mpmcore.experiments.runner import run_experiment
from mpmcore.experiments.store import RunStore
from mpmcore.procs import terminate
from mpmcore.sources.grid import GRID_HEADER, GRID_MAGIC, GRID_VERSION

PLAN = """
name = "short"
targets = ["core:prefork", "core:worker", "core:event"]
warmup = "0.3s"
rounds = 1
[budget]
slots = 8
processes = 2
[[stage]]
name = "steady"
duration = "1.5s"
  [[stage.pattern]]
  pattern = "steady"
  clients = 3
[[stage]]
name = "poll"
duration = "1s"
  [[stage.pattern]]
  pattern = "ajax"
  label = "poll"
  clients = 3
  interval = "100ms"
"""


def test_a_short_experiment_records_every_core_target(tmp_path):
    plan = parse_plan(PLAN, "short.toml")
    store = RunStore(tmp_path / "runs.sqlite3")
    progress = []
    run = run_experiment(plan, store=store, on_progress=progress.append, workdir=tmp_path / "work")
    assert run.meta.status == "complete"
    assert [t.target for t in run.targets] == ["core:prefork", "core:worker", "core:event"]
    assert {p.target for p in progress} >= {"core:prefork", "core:worker", "core:event"}
    assert progress[-1].state == "done"
    for tr in run.targets:
        assert tr.status == "complete", tr.message
        cfg = tr.config
        assert cfg is not None and cfg.settings["MaxRequestWorkers"] == "8" and cfg.version.startswith("mpmlab")
        assert cfg.url.startswith("http://127.0.0.1:")
        # per-pattern figures and histograms (warm-up not among them)
        by_label = {p.label: p for p in tr.patterns}
        assert set(by_label) == {"steady", "poll"}
        assert by_label["steady"].stage == "steady" and by_label["poll"].stage == "poll"
        for p in tr.patterns:
            assert p.total["responses"] > 0 and p.total["errors_total"] == 0, p.total
            h = HdrHistogram.decode(p.histograms["latency"])
            assert h.get_total_count() == p.total["latency_ms"]["count"] > 0
        # the series
        samples = store.samples(tr.id)
        assert len(samples) >= 2
        assert all(s.pss_bytes and s.pss_bytes > 0 and s.cpu_seconds is not None for s in samples), samples
        assert any(s.patterns.get("steady") and s.patterns["steady"].rps > 0 for s in samples)
        assert max(s.processes or 0 for s in samples) >= (8 if tr.target == "core:prefork" else 2)
        times = store.frame_times(tr.id)
        assert len(times) >= 10 and times == sorted(times)
        frame = store.frame_at(tr.id, times[-1])
        assert frame is not None
        magic, version, *_rest, rows, cols, tpc, _ = GRID_HEADER.unpack_from(frame.grid)
        assert (magic, version) == (GRID_MAGIC, GRID_VERSION)
        assert rows * cols == 8 and tpc == (1 if tr.target == "core:prefork" else 4)
        marks = store.marks(tr.id)
        assert [(m.kind, m.label) for m in marks if m.kind == "stage"] == [("stage", "steady"), ("stage", "poll")]
        assert marks[0].kind == "warmup"
        assert marks[0].t < marks[1].t < marks[2].t
    store.close()


ONE = """
name = "one"
targets = ["core:event"]
thresholds = "{thresholds}"
[budget]
slots = 4
processes = 1
{directives}
[[stage]]
name = "s"
duration = "1s"
  [[stage.pattern]]
  pattern = "steady"
  clients = 2
"""


@pytest.mark.parametrize("thresholds, directives, code", [
    ("errors>50%", "", 0),
    ("rps<100000000", "", 99),  # no machine answers 10^8 responses/s: the threshold fails
])
def test_run_exit_status(tmp_path, thresholds, directives, code):
    f = tmp_path / "one.toml"
    f.write_text(ONE.format(thresholds=thresholds, directives=directives))
    done = run_experiment_cli("run", str(f), "--runs-db", str(tmp_path / "runs.sqlite3"), "--out", str(tmp_path / "out"))
    out, err = done.stdout, done.stderr
    assert done.returncode == code, (out, err)
    assert "core:event" in out
    if code == 99:
        assert "threshold FAILED: steady: FAIL" in out
    assert "[round 1/1, target 1/1] core:event" in err


def test_a_target_that_dies_mid_stage_fails_the_run_with_1_and_the_next_one_runs(tmp_path):
    f = tmp_path / "two.toml"
    f.write_text(ONE.format(thresholds="", directives="").replace('targets = ["core:event"]',
                                                                  'targets = ["core:event", "core:worker"]')
                 .replace('duration = "1s"', 'duration = "3s"'))
    db = tmp_path / "runs.sqlite3"
    err_file = open(tmp_path / "err", "w")  # read while it runs
    proc = experiment_cli("run", str(f), "--runs-db", str(db), stderr=err_file)
    try:
        me = psutil.Process(proc.pid)

        def event_master():
            return next((c for c in me.children() if "--mpm" in c.cmdline() and "event" in c.cmdline()), None)

        def stage_began() -> bool:  # (the store is not opened while the CLI may be creating it)
            return "core:event: s " in (tmp_path / "err").read_text()

        wait_for(stage_began, timeout=30, what="core:event's stage")
        master = event_master()
        assert master is not None
        master.terminate()  # the core's own stop: the target ends in the middle of its stage
        out, _ = proc.communicate(timeout=60)
    finally:
        terminate(proc, 10)
        err_file.close()
    err = (tmp_path / "err").read_text()
    assert proc.returncode == 1, (out, err)
    assert "core:event (round 1): failed: core:event exited during stage s" in out, out
    with RunStore(db) as st:
        run = st.load(st.list_runs()[0].id)
        assert [(t.target, t.status) for t in run.targets] == [("core:event", "failed"), ("core:worker", "complete")]


def test_bad_usage_exits_2(tmp_path):
    for args, message in [(("run", "no-such-plan"), "no such plan file"),
                          (("run", "browsers", "--targets", "core:turbo"), "--targets: 'core:turbo'"),
                          (("run", "browsers", "--slots", "7"), "--slots must be a multiple"),
                          (("show", str(tmp_path / "x.toml")), "x.toml: No such file")]:
        done = run_experiment_cli(*args, "--plans", str(tmp_path), timeout=30)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.startswith("mpmlab experiment: ") and message in done.stderr, done.stderr
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"this is not a database" * 100)
    done = run_experiment_cli("run", "browsers", "--runs-db", str(bad), timeout=30)
    assert done.returncode == 2 and f"--runs-db {bad}" in done.stderr, done.stderr


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_stops_everything_and_exits_130(tmp_path, presses):
    f = tmp_path / "long.toml"
    f.write_text(ONE.format(thresholds="", directives="").replace('duration = "1s"', 'duration = "60s"'))
    err_file = open(tmp_path / "err", "w")  # read while it runs
    proc = experiment_cli("run", str(f), "--runs-db", str(tmp_path / "runs.sqlite3"), stderr=err_file)
    try:
        me = psutil.Process(proc.pid)
        # the core target and the traffic runner are up once the stage runs
        wait_for(lambda: len(me.children(recursive=True)) >= 2, timeout=30, what="target and traffic runner")
        children = me.children(recursive=True)

        def stage_began() -> bool:  # (the store is not opened while the CLI may be creating it)
            return "core:event: s " in (tmp_path / "err").read_text()

        wait_for(stage_began, timeout=30, what="the stage's mark in the store")
        proc.send_signal(signal.SIGINT)
        if presses == 2:  # a second Ctrl-C: stop at once
            wait_for(lambda: "stopping" in (tmp_path / "err").read_text(), timeout=10, what="the first stop")
            proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=40)
    finally:
        terminate(proc, 10)
        err_file.close()
    err = (tmp_path / "err").read_text()
    assert proc.returncode == 130, (out, err)
    assert ("(stopped)" in out) if presses == 1 else ("the run is stored as stopped" in err), (out, err)
    wait_for(lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children),
             timeout=10, what="every process of the experiment gone")
    store = RunStore(tmp_path / "runs.sqlite3")
    run = store.load(store.list_runs()[0].id)
    assert run.meta.status == "stopped" and run.targets[0].status == "stopped"
    store.close()


def test_an_attached_server_gets_the_traffic_and_is_recorded_not_started(tmp_path, server_factory):
    server = server_factory(mpm="worker", settings={"ThreadsPerChild": 4, "MaxRequestWorkers": 8,
                                                     "ServerLimit": 2, "StartServers": 2})
    plan = parse_plan(ONE.format(thresholds="", directives=""), "one.toml")
    spec = f"attach:http://{server.listen}/server-status"
    from mpmcore.experiments.targets import parse_target

    with RunStore(tmp_path / "runs.sqlite3") as store:
        run = run_experiment(plan, store=store, targets=[parse_target(spec)], workdir=tmp_path / "work")
        (tr,) = run.targets
        assert (tr.target, tr.status) == (spec, "complete")
        assert tr.config is not None and tr.config.url == f"http://{server.listen}/"
        assert tr.patterns[0].total["responses"] > 0
        assert store.frame_times(tr.id) and store.samples(tr.id)[0].busy is not None
        assert store.samples(tr.id)[0].pss_bytes is None  # not ours: no process tree to measure
    assert server.proc.poll() is None  # an attached server is left running


def test_list_and_show(tmp_path):
    (tmp_path / "mine.toml").write_text(ONE.format(thresholds="", directives=""))
    (tmp_path / "broken.toml").write_text("name = ")
    done = run_experiment_cli("list", "--plans", str(tmp_path), timeout=30)
    out = done.stdout
    assert done.returncode == 0, done.stderr
    for name in ("browsers", "slowloris", "one-at-a-time", "mixed", "one"):
        assert f"  {name} " in out, out
    assert "(broken) broken.toml: not valid TOML" in out
    done = run_experiment_cli("show", "one-at-a-time", "--targets", "core:prefork,core:worker,nginx", "--slots", "32",
                              timeout=30)
    out = done.stdout
    assert done.returncode == 0, done.stderr
    assert "budget: 32 slots, 2 processes" in out
    prefork, worker, nginx = out.split("\n  core:prefork")[1].split("\n  core:worker")[0], \
        out.split("\n  core:worker")[1].split("\n  nginx")[0], out.split("\n  nginx")[1]
    assert "MaxRequestWorkers 32" in prefork and "StartServers 32" in prefork
    assert "ThreadsPerChild 16" in worker and "ServerLimit 2" in worker
    assert "worker_processes 2" in nginx
