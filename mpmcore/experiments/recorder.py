"""The recorder of one target run: what the target does, second by second, into the run store.

One thread polls the target ~10 times a second through ``mpmcore.sources`` (``open_source``: the
core's scoreboard, a real server's status page), keeps each poll's scoreboard as a grid frame
(``grid_frame``: what the dashboard's scoreboard.js draws); another, once a second, whatever the
polls do (a starved Apache answers its status page late), writes to the store: the frames of that second,
one ``SecondSample`` (scoreboard states, busy/idle, processes, threads, connections, parked
connections from the last poll's summary; PSS, RSS and CPU seconds of the target's whole process
tree from psutil; the generator's per-pattern figures handed in by the runner from its stats
frames), the new lines of the target's error log, and the marks the runner added. Everything is
handed over every second, so a writer killed with SIGKILL loses at most about a second; nothing
is kept beyond that second (bounded memory).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from mpmcore.experiments.model import FrameRecord, LogLine, Mark, MarkKind, PatternSecond, SecondSample
from mpmcore.experiments.store import RunStore
from mpmcore.model import SourceFrame
from mpmcore.sources.attach import grid_frame
from mpmcore.sources.core import open_source
from mpmcore.traffic.runstats import RunInfo, StatsFrame

__all__ = ["FRAME_INTERVAL", "Recorder", "TreeUsage", "tree_usage"]

#: seconds between two polls of the target's status page (~10 frames a second)
FRAME_INTERVAL = 0.1
#: seconds between two hand-overs to the store (and two samples)
SAMPLE_INTERVAL = 1.0
#: error-log lines kept per second beyond which the rest are counted, not stored
MAX_LOG_LINES_PER_SECOND = 200
MAX_LOG_LINE = 2000
#: error-log bytes read per second at most
MAX_LOG_READ = 256 * 1024


class TreeUsage:
    __slots__ = ("cpu_seconds", "processes", "pss_bytes", "rss_bytes")

    def __init__(self, pss: int | None, rss: int | None, cpu: float | None, processes: int) -> None:
        self.pss_bytes = pss
        self.rss_bytes = rss
        self.cpu_seconds = cpu
        self.processes = processes


def tree_usage(roots: list[int]) -> TreeUsage:
    """PSS, RSS and cumulative CPU (user + system, reaped children included) of every process under
    ``roots``, the roots too. Processes that go away meanwhile are skipped."""
    pss = rss = 0
    cpu = 0.0
    seen: set[int] = set()
    got_mem = False
    for pid in roots:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for p in procs:
            if p.pid in seen:
                continue
            seen.add(p.pid)
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    cpu += t.user + t.system
                    if p.pid == pid:
                        cpu += t.children_user + t.children_system
                    try:
                        m = p.memory_full_info()
                        pss += int(getattr(m, "pss", m.rss))
                        rss += int(m.rss)
                        got_mem = True
                    except psutil.AccessDenied:
                        rss += int(p.memory_info().rss)
            except psutil.Error:
                continue
    if not seen:
        return TreeUsage(None, None, None, 0)
    return TreeUsage(pss if got_mem else None, rss if got_mem else None, round(cpu, 3), len(seen))


class _LogTail:
    """New lines of a log file since the recorder started (bounded per read)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.pos = 0
        self.partial = b""
        if path is not None:
            try:
                self.pos = path.stat().st_size
            except OSError:
                self.pos = 0

    def read(self) -> list[str]:
        if self.path is None:
            return []
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, 2)
                if size < self.pos:  # truncated or replaced: start again
                    self.pos = 0
                f.seek(self.pos)
                data = f.read(MAX_LOG_READ)
                self.pos += len(data)
        except OSError:
            return []
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()[-MAX_LOG_LINE:]
        return [ln.decode("utf-8", "replace")[:MAX_LOG_LINE] for ln in lines if ln.strip()]


class Recorder:
    """Records one target run into ``store`` under ``target_run_id``. ``t0`` (monotonic) is the
    target run's start: every time written is seconds since it. ``roots()`` gives the target's
    process-tree roots (for PSS/CPU). ``start()`` begins polling, ``stop()`` ends it and hands
    over what is left. The runner calls ``on_stats`` with the generator's stats frames (from its
    event loop: only a dict swap under a lock), ``mark`` for stage changes and ``note`` for lines
    of its own."""

    def __init__(self, store: RunStore, target_run_id: int, source_spec: str | None, roots: Callable[[], list[int]],
                 *, t0: float | None = None, error_log: Path | None = None, threads_per_child: int | None = None,
                 frame_interval: float = FRAME_INTERVAL) -> None:
        self.store = store
        self.id = target_run_id
        self.roots = roots
        self.t0 = time.monotonic() if t0 is None else t0
        self.frame_interval = frame_interval
        self.source = (open_source(source_spec, threads_per_child=threads_per_child)
                       if source_spec is not None else None)
        self.stage = ""
        self._lock = threading.Lock()
        self._frames: list[FrameRecord] = []
        self._marks: list[Mark] = []
        self._logs: list[LogLine] = []
        self._tail = _LogTail(error_log)
        self._patterns: dict[str, str] = {}  # traffic pattern id -> label
        self._acc: dict[str, list[float]] = {}  # label -> [responses, errors]
        # label -> the second's latencies: the last 250 ms window with responses (p50), and the
        # highest p99 and corrected p99 of its windows (a window without responses has none)
        self._lat: dict[str, list[float | None]] = {}
        self._last: dict[str, RunInfo] = {}  # label -> latest RunInfo
        self._client_conns = 0
        self._last_frame: SourceFrame | None = None
        self._busy_max: int | None = None  # the most busy slots read since the last sample
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poller: threading.Thread | None = None
        self._seq = 0
        self.frames_written = 0
        self.samples_written = 0
        self.poll_errors = 0
        self.last_error: str | None = None

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    # -- fed by the runner ----------------------------------------------------------------------
    def watch(self, pattern_id: str, label: str) -> None:
        with self._lock:
            self._patterns[pattern_id] = label

    def unwatch(self, pattern_id: str) -> None:
        with self._lock:
            self._patterns.pop(pattern_id, None)

    def on_stats(self, frame: StatsFrame) -> None:
        with self._lock:
            conns = 0
            for info in frame.patterns:
                label = self._patterns.get(info.id)
                if label is None:
                    continue
                conns += info.active_connections
                if info.live is not None:
                    acc = self._acc.setdefault(label, [0.0, 0.0])
                    acc[0] += info.live.responses
                    acc[1] += info.live.errors_total
                    lat, cor = info.live.latency_ms, info.live.corrected_latency_ms
                    if lat is not None:
                        got = self._lat.setdefault(label, [None, None, None])
                        got[0] = lat.p50
                        got[1] = lat.p99 if got[1] is None else max(got[1], lat.p99)
                        if cor is not None:
                            got[2] = cor.p99 if got[2] is None else max(got[2], cor.p99)
                self._last[label] = info
            self._client_conns = conns

    def mark(self, kind: MarkKind, label: str) -> None:
        with self._lock:
            self._marks.append(Mark(t=self.now(), kind=kind, label=label))

    def note(self, text: str, source: str = "runner") -> None:
        with self._lock:
            self._logs.append(LogLine(t=self.now(), source=source, text=text[:MAX_LOG_LINE]))

    # -- the thread -----------------------------------------------------------------------------
    def start(self) -> Recorder:
        # Two threads: a status poll can wait (a starved Apache answers its status page late, up
        # to the source's timeout), the samples and the hand-over to the store must not.
        self._poller = threading.Thread(target=self._poll_loop, name=f"recorder-poll-{self.id}", daemon=True)
        self._thread = threading.Thread(target=self._run, name=f"recorder-{self.id}", daemon=True)
        self._poller.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for th in (self._poller, self._thread):
            if th is not None:
                th.join(10)
        if self.source is not None:
            self.source.close()

    def _poll_loop(self) -> None:
        next_poll = time.monotonic()
        try:
            while not self._stop.is_set():
                self._poll()
                next_poll += self.frame_interval
                delay = next_poll - time.monotonic()
                if delay < 0:  # a slow poll: start again from now instead of piling up
                    next_poll = time.monotonic()
                    delay = 0.0
                self._stop.wait(delay)
        except Exception as e:  # a bug: say so, the samples go on without frames
            self.last_error = f"{type(e).__name__}: {e}"

    def _run(self) -> None:
        last_sample = time.monotonic()
        try:
            while not self._stop.wait(max(0.0, last_sample + SAMPLE_INTERVAL - time.monotonic())):
                now = time.monotonic()
                self._flush(now - last_sample)
                last_sample = now
            if self._poller is not None:
                self._poller.join(10)  # its last frame goes into the last hand-over
            self._flush(max(time.monotonic() - last_sample, 0.001))
        except Exception as e:  # the store is gone, or a bug: say so, the run goes on unrecorded
            self.last_error = f"{type(e).__name__}: {e}"

    def _poll(self) -> None:
        if self.source is None:
            return
        frame = self.source.poll()
        t = self.now()
        if not frame.ok:
            self.poll_errors += 1
            self.last_error = frame.error
            return
        self._last_frame = frame
        busy = frame.summary.busy if frame.summary is not None else None
        if busy is not None:
            with self._lock:
                self._busy_max = busy if self._busy_max is None else max(self._busy_max, busy)
        self._seq += 1
        grid = grid_frame(frame, self._seq)
        if grid is not None:
            with self._lock:
                self._frames.append(FrameRecord(t=t, grid=grid))

    def _sample(self, seconds: float) -> SecondSample:
        t = self.now()
        usage = tree_usage(self.roots())
        with self._lock:
            patterns: dict[str, PatternSecond] = {}
            rps = 0.0
            errors = 0
            for label, info in self._last.items():
                acc = self._acc.get(label, [0.0, 0.0])
                p50, p99, cor99 = self._lat.get(label, (None, None, None))
                p_rps = round(acc[0] / seconds, 2)
                patterns[label] = PatternSecond(rps=p_rps, errors=int(acc[1]), p50_ms=p50, p99_ms=p99,
                                                corrected_p99_ms=cor99, connections=info.active_connections)
                rps += p_rps
                errors += int(acc[1])
            self._acc.clear()
            self._lat.clear()
            self._last = {label: info for label, info in self._last.items() if label in self._patterns.values()}
            client_conns = self._client_conns
            busy_max, self._busy_max = self._busy_max, None
        s = self._last_frame.summary if self._last_frame is not None else None
        threads = None
        if s is not None and s.scoreboard is not None:
            threads = sum(1 for ch in s.scoreboard if ch not in ".")
        conns = None
        parked = None
        if s is not None:
            conns = s.conns_total
            parked = s.conns_async_keep_alive
            if s.nginx is not None:
                conns, parked = s.nginx.active, s.nginx.waiting
        return SecondSample(
            t=t, stage=self.stage, rps=round(rps, 2), errors=errors,
            states=s.state_counts if s is not None else None, busy=s.busy if s is not None else None,
            idle=s.idle if s is not None else None, processes=s.processes if s is not None else None,
            threads=threads, connections=conns, parked=parked, pss_bytes=usage.pss_bytes,
            rss_bytes=usage.rss_bytes, cpu_seconds=usage.cpu_seconds, client_connections=client_conns,
            patterns=patterns, busy_max=busy_max)

    def _flush(self, seconds: float) -> None:
        sample = self._sample(seconds)
        lines = self._tail.read()
        with self._lock:
            frames, self._frames = self._frames, []
            marks, self._marks = self._marks, []
            logs, self._logs = self._logs, []
        t = self.now()
        kept = lines[:MAX_LOG_LINES_PER_SECOND]
        logs += [LogLine(t=t, source="error_log", text=ln) for ln in kept]
        if len(lines) > len(kept):
            logs.append(LogLine(t=t, source="runner", text=f"{len(lines) - len(kept)} more error-log lines "
                                                             "this second, not stored"))
        if frames:
            self.store.add_frames(self.id, frames)
            self.frames_written += len(frames)
        self.store.add_samples(self.id, [sample])
        self.samples_written += 1
        if marks:
            self.store.add_marks(self.id, marks)
        if logs:
            self.store.add_logs(self.id, logs)
