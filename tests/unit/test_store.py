"""The run store: what goes in comes out as the model's types; foreign, corrupt and truncated
files are refused with a clear message; runs of a writer that died are marked incomplete."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from mpmcore.experiments.model import (
    EffectiveConfig,
    FrameRecord,
    LogLine,
    Mark,
    PatternResult,
    PatternSecond,
    SecondSample,
)
from mpmcore.experiments.store import RunNotFound, RunStore, StoreError
from mpmcore.model import count_states


def _fill(store: RunStore) -> tuple[int, int]:
    run = store.begin_run("experiment", "browsers", "Browsers", "name='browsers'", ["core:event"], {"cpus": "2"})
    cfg = EffectiveConfig(target="core:event", kind="core", mpm="event", version="mpmlab 0.1",
                          settings={"MaxRequestWorkers": "64"}, not_comparable={"cpu": "no handler"})
    tr = store.begin_target(run, "core:event", 1, cfg)
    store.add_samples(tr, [SecondSample(t=float(i), stage="s1", rps=100.0 + i, errors=0,
                                        states=count_states("_W_K"), busy=2, idle=2, pss_bytes=1000 * i,
                                        patterns={"browsers": PatternSecond(rps=50.0, errors=0, p99_ms=3.5)})
                           for i in range(3)])
    store.add_frames(tr, [FrameRecord(t=i / 10, grid=bytes([i]) * 4000) for i in range(30)])
    store.add_logs(tr, [LogLine(t=0.5, source="error_log", text="AH00489: started")])
    store.add_marks(tr, [Mark(t=0.0, kind="stage", label="s1")])
    store.end_target(tr, "complete", [PatternResult(label="browsers", pattern="browsers", stage="s1",
                                                    params={"clients": 4}, total={"requests": 3},
                                                    histograms={"latency": "HISTFAAAA"})],
                     thresholds_failed=["p99>1ms"])
    store.end_run(run, "complete")
    return run, tr


def test_round_trip(tmp_path):
    with RunStore(tmp_path / "runs.sqlite3") as store:
        run, tr = _fill(store)
        loaded = store.load(run)
        assert loaded.meta.name == "browsers" and loaded.meta.status == "complete"
        assert loaded.meta.targets == ("core:event",) and loaded.meta.host == {"cpus": "2"}
        (t,) = loaded.targets
        assert t.config is not None and t.config.not_comparable == {"cpu": "no handler"}
        assert t.patterns[0].histograms == {"latency": "HISTFAAAA"} and t.thresholds_failed == ("p99>1ms",)
        samples = store.samples(tr)
        assert [s.rps for s in samples] == [100.0, 101.0, 102.0]
        assert samples[1].patterns["browsers"].p99_ms == 3.5 and samples[1].states is not None
        assert samples[1].states["K"] == 1
        assert len(store.frame_times(tr)) == 30
        at = store.frame_at(tr, 1.05)
        assert at is not None and at.t == 1.0 and at.grid == bytes([10]) * 4000
        assert store.frame_at(tr, -1) is None
        assert [f.t for f in store.frames(tr, 0.5, 0.8)] == [0.5, 0.6, 0.7, 0.8]
        assert store.logs(tr)[0].text.startswith("AH00489") and store.marks(tr)[0].label == "s1"
        assert store.latest_claim_runs() == {"browsers": run}
        assert [m.id for m in store.list_runs()] == [run]
        assert store.list_runs(kind="recording") == []
    with RunStore(tmp_path / "runs.sqlite3") as again:  # reopened: the same run, still complete
        assert again.load(run).meta.status == "complete"
        again.delete_run(run)
        with pytest.raises(RunNotFound, match=f"no run {run}"):
            again.load(run)
        assert again.samples(tr) == []  # the series went with it


def test_frames_are_compressed(tmp_path):
    with RunStore(tmp_path / "r.sqlite3") as store:
        run = store.begin_run("recording", "live", "live", "", [])
        tr = store.begin_target(run, "core", 1)
        store.add_frames(tr, [FrameRecord(t=i / 10, grid=b"\x02" * 8192) for i in range(100)])
        raw = sqlite3.connect(tmp_path / "r.sqlite3").execute("SELECT SUM(LENGTH(grid)) FROM frames").fetchone()[0]
        assert raw < 100 * 8192 / 20


def test_refuses_text_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello, not a database\n" * 10)
    with pytest.raises(StoreError, match="not an SQLite database"):
        RunStore(p)
    assert p.read_text().startswith("hello")  # untouched


def test_refuses_foreign_sqlite(tmp_path):
    p = tmp_path / "other.sqlite3"
    db = sqlite3.connect(p)
    db.execute("CREATE TABLE t(x)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="something else"):
        RunStore(p)


def test_refuses_truncated(tmp_path):
    p = tmp_path / "runs.sqlite3"
    with RunStore(p) as store:
        run = store.begin_run("experiment", "x", "x", "", ["core:event"])
        tr = store.begin_target(run, "core:event", 1)
        store.add_frames(tr, [FrameRecord(t=i / 10, grid=bytes(range(256)) * 64) for i in range(400)])
    con = sqlite3.connect(p)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = p.read_bytes()
    assert len(data) > 20_000
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(StoreError, match=r"truncated|corrupt|malformed"):
        RunStore(p)
    p.write_bytes(data[:60])
    with pytest.raises(StoreError, match="truncated"):
        RunStore(p)


def test_run_of_a_dead_writer_is_incomplete(tmp_path):
    p = tmp_path / "runs.sqlite3"
    code = (f"from mpmcore.experiments.store import RunStore\n"
            f"from mpmcore.experiments.model import SecondSample\n"
            f"s = RunStore({str(p)!r})\n"
            f"r = s.begin_run('experiment', 'x', 'x', '', ['core:event'])\n"
            f"t = s.begin_target(r, 'core:event', 1)\n"
            f"s.add_samples(t, [SecondSample(t=float(i), stage='a', rps=1.0, errors=0) for i in range(5)])\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)  # exits without end_run
    with RunStore(p) as store:
        (meta,) = store.list_runs()
        assert meta.status == "incomplete" and meta.ended_at is not None
        (tr,) = store.load(meta.id).targets
        assert tr.status == "incomplete" and len(store.samples(tr.id)) == 5


def test_live_writer_keeps_its_run_running(tmp_path):
    p = tmp_path / "runs.sqlite3"
    with RunStore(p) as writer:
        run = writer.begin_run("recording", "live", "live", "", [])
        with RunStore(p) as reader:  # a second opener (the dashboard's page) while this process writes
            assert reader.load(run).meta.status == "running"
