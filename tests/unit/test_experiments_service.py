"""The dashboard's experiments service and replay reads on a real run store in tmp_path (no
processes): how a background run's outcome is told from the stored runs; which target runs a replay
picks; the frame batches' layout, window and the frame before it."""

from __future__ import annotations

import struct

import pytest

from mpmcore.experiments.model import FrameRecord
from mpmcore.experiments.store import RunStore
from mpmlab.services import replay
from mpmlab.services.experiments import _outcome


@pytest.fixture
def store(tmp_path):
    with RunStore(tmp_path / "runs.sqlite3") as s:
        yield s


def _run(store: RunStore, name: str, targets: dict[str, tuple[str, str]]) -> int:
    rid = store.begin_run("experiment", name, name, "", list(targets))
    for target, (status, message) in targets.items():
        tid = store.begin_target(rid, target, 1)
        store.end_target(tid, status, message=message)  # type: ignore[arg-type]
    store.end_run(rid, "complete")
    return rid


def test_outcome_of_the_stored_runs(store):
    ok = _run(store, "a", {"core:event": ("complete", "")})
    assert _outcome(store, [ok]) == ("complete", "")
    skipped = _run(store, "b", {"core:event": ("complete", ""), "nginx": ("skipped", "nginx is not installed")})
    status, message = _outcome(store, [ok, skipped])
    assert status == "complete" and "nginx skipped (nginx is not installed)" in message
    failed = _run(store, "c", {"apache:event": ("failed", "apache2 exited with 1")})
    status, message = _outcome(store, [ok, failed])
    assert status == "failed" and f"run {failed} (c): apache:event: apache2 exited with 1" in message


def test_choose_targets_and_frame_batches(store):
    rid = store.begin_run("recording", "live", "live", "", ["core:event", "core:worker"])
    a = store.begin_target(rid, "core:event", 1)
    b = store.begin_target(rid, "core:worker", 1)
    store.add_frames(a, [FrameRecord(t / 10, bytes([t]) * 40) for t in range(100)])
    run = store.load(rid)
    assert replay.choose(run) == [a, b]
    assert replay.choose(run, ["core:worker"]) == [b]
    assert replay.choose(run, [str(a), "core:worker#1"]) == [a, b]
    with pytest.raises(KeyError, match="no target 'nginx'"):
        replay.choose(run, ["nginx"])
    blob = replay.frames_blob(store, a, 2.05, 3.0)
    magic, n = struct.unpack_from("<II", blob)
    frames, o = [], 8
    for _ in range(n):
        t, length = struct.unpack_from("<dI", blob, o)
        frames.append((t, blob[o + 12:o + 12 + length]))
        o += 12 + length
    assert magic == replay.BATCH_MAGIC and o == len(blob)
    # the frame shown at 2.05 (t=2.0) first, then the window's
    assert [round(t, 1) for t, _ in frames] == [2.0 + i / 10 for i in range(11)]
    assert frames[0][1] == bytes([20]) * 40
    assert struct.unpack_from("<II", replay.frames_blob(store, b, 0, 10)) == (replay.BATCH_MAGIC, 0)
    tl = replay.timeline(store, run, [a, b])
    assert tl.duration == pytest.approx(9.9) and tl.targets[1].frame_times == []
