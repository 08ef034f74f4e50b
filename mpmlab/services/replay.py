"""What the replay view reads from the run store: a run's timeline (per target run: its frame
times, its per-second samples, its marks, its log lines) in one answer, and its grid frames in batches.

The page opens a run with one ``timeline`` request, then fetches frames in batches (``frames_blob``:
every frame of a time window, length-prefixed) around its clock, so scrubbing a 10-minute run never
asks for one frame per request. A frame is ``mpmcore.sources.grid.grid_frame``'s binary frame as the
live page's websocket sends it: static/js/scoreboard.js draws both.

Batch layout (little-endian), decoded by static/js/replay.js:

    0  u32 magic 0x5250 ('PR')       4  u32 frames in the batch
    then per frame: f64 t (seconds since the target run began), u32 length, the frame's bytes
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from mpmcore.experiments.model import LogLine, Mark, RunMeta, RunStatus, SecondSample, StoredRun
from mpmcore.experiments.store import RunStore

BATCH_MAGIC = 0x5250
_HEAD = struct.Struct("<II")
_FRAME = struct.Struct("<dI")
#: The longest window one batch request may ask for, in seconds, and the most frames it returns.
MAX_BATCH_SECONDS = 60.0
MAX_BATCH_FRAMES = 1200


@dataclass(frozen=True, slots=True)
class TargetTimeline:
    """One target run as the replay needs it."""

    id: int
    target: str
    round: int
    status: RunStatus
    duration: float  # seconds: the last frame, sample or mark
    frame_times: list[float]
    samples: list[SecondSample]
    marks: list[Mark]
    logs: list[LogLine]  # the server's error_log lines (and the runner's), at their time
    message: str = ""


@dataclass(frozen=True, slots=True)
class Timeline:
    meta: RunMeta
    duration: float  # the longest of the targets' (one clock for all)
    targets: list[TargetTimeline]


def choose(run: StoredRun, wanted: Sequence[str] = ()) -> list[int]:
    """The target runs to replay: those named in ``wanted`` (a target's name, ``name#round`` or a
    target run's id), else every target run. Raises KeyError naming one that is not in the run."""
    if not wanted:
        return [t.id for t in run.targets]
    out: list[int] = []
    for w in wanted:
        w = w.strip()
        found = [t for t in run.targets if w in (t.target, f"{t.target}#{t.round}", str(t.id))]
        if not found:
            names = ", ".join(sorted({t.target for t in run.targets})) or "none"
            raise KeyError(f"run {run.meta.id} has no target {w!r} (it has: {names})")
        out.extend(t.id for t in found[:1] if t.id not in out)
    return out


def timeline(store: RunStore, run: StoredRun, target_ids: Sequence[int]) -> Timeline:
    by_id = {t.id: t for t in run.targets}
    out: list[TargetTimeline] = []
    for tid in target_ids:
        tr = by_id[tid]
        times = store.frame_times(tid)
        samples = store.samples(tid)
        marks = store.marks(tid)
        logs = store.logs(tid)
        duration = max([0.0] + times[-1:] + [s.t for s in samples[-1:]] + [m.t for m in marks])
        out.append(TargetTimeline(id=tid, target=tr.target, round=tr.round, status=tr.status, duration=duration,
                                  frame_times=times, samples=samples, marks=marks, logs=logs,
                                  message=tr.message))
    return Timeline(meta=run.meta, duration=max([0.0] + [t.duration for t in out]), targets=out)


def frames_blob(store: RunStore, target_run_id: int, t0: float, t1: float) -> bytes:
    """Every frame of ``target_run_id`` with ``t0 <= t < t1`` (at most MAX_BATCH_SECONDS and
    MAX_BATCH_FRAMES of them), plus the last one before ``t0`` so that the window's start is drawn
    as it was, length-prefixed (the layout in the module's docstring)."""
    t1 = min(t1, t0 + MAX_BATCH_SECONDS)
    frames = store.frames(target_run_id, t0, t1, limit=MAX_BATCH_FRAMES)
    before = store.frame_at(target_run_id, t0)
    if before is not None and (not frames or before.t < frames[0].t):
        frames = [before, *frames]
    frames = frames[:MAX_BATCH_FRAMES]
    parts = [_HEAD.pack(BATCH_MAGIC, len(frames))]
    for f in frames:
        parts.append(_FRAME.pack(f.t, len(f.grid)))
        parts.append(f.grid)
    return b"".join(parts)
