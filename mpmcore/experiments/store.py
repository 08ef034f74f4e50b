"""The run store: every experiment run and every recorded live session, in one SQLite file.

One file (default ``$XDG_DATA_HOME/mpmlab/runs.sqlite3``; ``--runs-db PATH``) holds runs, their
target runs (one per target per round), and each target run's series: per-second samples, grid
frames (zlib-compressed), log lines and marks. Everything goes in and comes out as the types of
``mpmcore.experiments.model``; the JSON columns are those types' fields.

Durability: WAL journal, and every write call is its own transaction, so a writer killed with
SIGKILL loses only what it had not yet handed over (the recorder hands over once a second). A run
left "running" by a writer that is gone (its pid and start time no longer name a live process) is
marked "incomplete" the next time the store opens. A file that is not a run store (another SQLite
database, a truncated or corrupt file, anything else) is refused with a :class:`StoreError` that
says which; nothing is written to it.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import psutil

from mpmcore.experiments.model import (
    EffectiveConfig,
    FrameRecord,
    LogLine,
    Mark,
    PatternResult,
    PatternSecond,
    RunKind,
    RunMeta,
    RunStatus,
    SecondSample,
    StoredRun,
    TargetRun,
)
from mpmcore.model import to_jsonable

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "RunNotFound", "RunStore", "StoreError", "config_from_json", "default_path",
           "patterns_from_json", "sample_from_json"]

#: ``PRAGMA application_id`` of a run store ("MPML"): tells our files from other SQLite databases.
APPLICATION_ID = 0x4D504D4C
SCHEMA_VERSION = 1
_SQLITE_MAGIC = b"SQLite format 3\x00"
#: zlib level for grid frames: level 6 compresses a 4,096-slot frame ~20x at ~60 us a frame.
_FRAME_LEVEL = 6

_SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    title TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    plan_source TEXT NOT NULL,
    targets TEXT NOT NULL,
    host TEXT NOT NULL,
    notes TEXT NOT NULL,
    writer_pid INTEGER,
    writer_start REAL
);
CREATE TABLE target_runs (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    target TEXT NOT NULL,
    round INTEGER NOT NULL,
    status TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    config TEXT,
    patterns TEXT NOT NULL,
    message TEXT NOT NULL,
    thresholds_failed TEXT NOT NULL
);
CREATE INDEX target_runs_run ON target_runs(run_id);
CREATE TABLE samples (
    target_run_id INTEGER NOT NULL REFERENCES target_runs(id) ON DELETE CASCADE,
    t REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX samples_t ON samples(target_run_id, t);
CREATE TABLE frames (
    target_run_id INTEGER NOT NULL REFERENCES target_runs(id) ON DELETE CASCADE,
    t REAL NOT NULL,
    grid BLOB NOT NULL
);
CREATE INDEX frames_t ON frames(target_run_id, t);
CREATE TABLE logs (
    target_run_id INTEGER NOT NULL REFERENCES target_runs(id) ON DELETE CASCADE,
    t REAL NOT NULL,
    source TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX logs_t ON logs(target_run_id, t);
CREATE TABLE marks (
    target_run_id INTEGER NOT NULL REFERENCES target_runs(id) ON DELETE CASCADE,
    t REAL NOT NULL,
    kind TEXT NOT NULL,
    label TEXT NOT NULL
);
CREATE INDEX marks_t ON marks(target_run_id, t);
"""
_TABLES = {"runs", "target_runs", "samples", "frames", "logs", "marks"}


class StoreError(Exception):
    """The file cannot be used as a run store; the message names it and says why."""


class RunNotFound(KeyError):
    """No run (or target run) with that id."""

    def __str__(self) -> str:  # KeyError's str() quotes its argument
        return str(self.args[0]) if self.args else "run not found"


def default_path() -> Path:
    """``$XDG_DATA_HOME/mpmlab/runs.sqlite3``, ``~/.local/share/mpmlab/runs.sqlite3`` without it."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "mpmlab" / "runs.sqlite3"


def _dumps(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), separators=(",", ":"))


def sample_from_json(d: dict[str, Any]) -> SecondSample:
    """A SecondSample from its JSON form (``to_jsonable``'s: a samples row, a bundle's record)."""
    pats = {k: PatternSecond(**v) for k, v in d.get("patterns", {}).items()}
    return SecondSample(**{**d, "patterns": pats})


def config_from_json(d: dict[str, Any] | None) -> EffectiveConfig | None:
    """An EffectiveConfig from its JSON form (None stays None)."""
    return None if d is None else EffectiveConfig(**d)


def patterns_from_json(items: Sequence[dict[str, Any]]) -> tuple[PatternResult, ...]:
    """Pattern results from their JSON form."""
    return tuple(PatternResult(**d) for d in items)


def _writer_alive(pid: int | None, start: float | None) -> bool:
    if pid is None:
        return False
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        # the same pid and the same start time: the writer itself, not a process that reused its pid
        return start is None or abs(p.create_time() - start) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


class RunStore:
    """The run store of one SQLite file; safe to share between threads (one lock)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._check_file()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"{self.path}: cannot open the run store: {e}") from None
        try:
            self._open()
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise StoreError(f"{self.path}: not a usable mpmlab run store ({e}); "
                             "it may be truncated or corrupt: move it away and a new one is made") from None
        except StoreError:
            self._db.close()
            raise
        me = psutil.Process()
        self._pid, self._start = me.pid, me.create_time()

    # -- opening -----------------------------------------------------------------------------------
    def _check_file(self) -> None:
        try:
            with open(self.path, "rb") as f:
                head = f.read(100)
        except FileNotFoundError:
            return
        except OSError as e:
            raise StoreError(f"{self.path}: cannot read: {e}") from None
        if head and not head.startswith(_SQLITE_MAGIC):
            raise StoreError(f"{self.path}: not an mpmlab run store (not an SQLite database)")
        if head and len(head) < 100:
            raise StoreError(f"{self.path}: truncated ({len(head)} bytes): not a usable run store")

    def _open(self) -> None:
        db = self._db
        # BEGIN IMMEDIATE takes the write lock before looking: two processes opening a new file at
        # once (an experiment and the dashboard) would otherwise both see it empty and both create
        # the schema, and the second would fail on "table runs already exists". The loser waits
        # (busy timeout) and then finds the schema made.
        db.execute("BEGIN IMMEDIATE")
        try:
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            created = app_id == 0 and not tables
            if created:
                db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                for statement in _SCHEMA.split(";"):  # (executescript would commit first)
                    if statement.strip():
                        db.execute(statement)
            elif app_id != APPLICATION_ID:
                raise StoreError(f"{self.path}: an SQLite database of something else, not an mpmlab run store")
            else:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version != SCHEMA_VERSION:
                    raise StoreError(f"{self.path}: run store schema version {version}; this mpmlab reads "
                                     f"version {SCHEMA_VERSION}")
                if not tables >= _TABLES:
                    raise StoreError(f"{self.path}: run store lacks tables {sorted(_TABLES - tables)}: corrupt")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("PRAGMA journal_mode=WAL")  # (not inside a transaction)
        if not created:
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"{self.path}: run store is corrupt ({check})")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA synchronous=NORMAL")
        self._mark_orphans()

    def _mark_orphans(self) -> None:
        """Runs whose writer is gone (killed mid-run) become "incomplete", with their running targets."""
        rows = self._db.execute("SELECT id, writer_pid, writer_start FROM runs WHERE status='running'").fetchall()
        for run_id, pid, start in rows:
            if _writer_alive(pid, start):
                continue
            last = self._db.execute(
                "SELECT MAX(tr.started_at + COALESCE((SELECT MAX(t) FROM samples s WHERE s.target_run_id=tr.id), 0))"
                " FROM target_runs tr WHERE tr.run_id=?", (run_id,)).fetchone()[0]
            with self._tx():
                self._db.execute("UPDATE target_runs SET status='incomplete', ended_at=? WHERE run_id=? AND "
                                 "status='running'", (last, run_id))
                self._db.execute("UPDATE runs SET status='incomplete', ended_at=? WHERE id=?", (last, run_id))

    def _tx(self) -> _Tx:
        return _Tx(self._db, self._lock)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------------------
    def begin_run(self, kind: RunKind, name: str, title: str, plan_source: str, targets: Sequence[str],
                  host: Mapping[str, str] | None = None, notes: str = "") -> int:
        with self._tx():
            cur = self._db.execute(
                "INSERT INTO runs(kind,name,title,status,started_at,plan_source,targets,host,notes,writer_pid,"
                "writer_start) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (kind, name, title, "running", time.time(), plan_source, json.dumps(list(targets)),
                 json.dumps(dict(host or {})), notes, self._pid, self._start))
            return int(cast(int, cur.lastrowid))

    def end_run(self, run_id: int, status: RunStatus) -> None:
        with self._tx():
            if self._db.execute("UPDATE runs SET status=?, ended_at=? WHERE id=?",
                                (status, time.time(), run_id)).rowcount == 0:
                raise RunNotFound(f"no run {run_id}")

    def set_run_targets(self, run_id: int, targets: Sequence[str]) -> None:
        """A recording learns its targets as it goes (an attached server added mid-session)."""
        with self._tx():
            self._db.execute("UPDATE runs SET targets=? WHERE id=?", (json.dumps(list(targets)), run_id))

    def begin_target(self, run_id: int, target: str, round: int, config: EffectiveConfig | None = None) -> int:
        with self._tx():
            if self._db.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone() is None:
                raise RunNotFound(f"no run {run_id}")
            cur = self._db.execute(
                "INSERT INTO target_runs(run_id,target,round,status,started_at,config,patterns,message,"
                "thresholds_failed) VALUES (?,?,?,?,?,?,?,?,?)",
                (run_id, target, round, "running", time.time(), None if config is None else _dumps(config),
                 "[]", "", "[]"))
            return int(cast(int, cur.lastrowid))

    def set_config(self, target_run_id: int, config: EffectiveConfig) -> None:
        with self._tx():
            self._db.execute("UPDATE target_runs SET config=? WHERE id=?", (_dumps(config), target_run_id))

    def end_target(self, target_run_id: int, status: RunStatus, patterns: Sequence[PatternResult] = (),
                   message: str = "", thresholds_failed: Sequence[str] = ()) -> None:
        with self._tx():
            n = self._db.execute(
                "UPDATE target_runs SET status=?, ended_at=?, patterns=?, message=?, thresholds_failed=? WHERE id=?",
                (status, time.time(), _dumps(list(patterns)), message, json.dumps(list(thresholds_failed)),
                 target_run_id)).rowcount
            if n == 0:
                raise RunNotFound(f"no target run {target_run_id}")

    def add_samples(self, target_run_id: int, samples: Sequence[SecondSample]) -> None:
        if samples:
            with self._tx():
                self._db.executemany("INSERT INTO samples(target_run_id,t,data) VALUES (?,?,?)",
                                     [(target_run_id, s.t, _dumps(s)) for s in samples])

    def add_frames(self, target_run_id: int, frames: Sequence[FrameRecord]) -> None:
        if frames:
            rows = [(target_run_id, f.t, zlib.compress(f.grid, _FRAME_LEVEL)) for f in frames]
            with self._tx():
                self._db.executemany("INSERT INTO frames(target_run_id,t,grid) VALUES (?,?,?)", rows)

    def add_logs(self, target_run_id: int, lines: Sequence[LogLine]) -> None:
        if lines:
            with self._tx():
                self._db.executemany("INSERT INTO logs(target_run_id,t,source,text) VALUES (?,?,?,?)",
                                     [(target_run_id, x.t, x.source, x.text) for x in lines])

    def add_marks(self, target_run_id: int, marks: Sequence[Mark]) -> None:
        if marks:
            with self._tx():
                self._db.executemany("INSERT INTO marks(target_run_id,t,kind,label) VALUES (?,?,?,?)",
                                     [(target_run_id, m.t, m.kind, m.label) for m in marks])

    def delete_run(self, run_id: int) -> None:
        with self._tx():
            if self._db.execute("DELETE FROM runs WHERE id=?", (run_id,)).rowcount == 0:
                raise RunNotFound(f"no run {run_id}")

    # -- reading -----------------------------------------------------------------------------------
    def _meta(self, row: tuple[Any, ...]) -> RunMeta:
        (rid, kind, name, title, status, started, ended, source, targets, host, notes) = row
        return RunMeta(id=rid, kind=kind, name=name, title=title, status=status, started_at=started,
                       ended_at=ended, plan_source=source, targets=tuple(json.loads(targets)),
                       host=json.loads(host), notes=notes)

    _META_COLS = "id,kind,name,title,status,started_at,ended_at,plan_source,targets,host,notes"

    def list_runs(self, kind: RunKind | None = None, limit: int = 200) -> list[RunMeta]:
        """Newest first."""
        q = f"SELECT {self._META_COLS} FROM runs"
        args: tuple[Any, ...] = ()
        if kind is not None:
            q += " WHERE kind=?"
            args = (kind,)
        q += " ORDER BY started_at DESC, id DESC LIMIT ?"
        with self._lock:
            return [self._meta(r) for r in self._db.execute(q, (*args, limit))]

    def load(self, run_id: int) -> StoredRun:
        with self._lock:
            row = self._db.execute(f"SELECT {self._META_COLS} FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(f"no run {run_id}")
            trs = self._db.execute(
                "SELECT id,run_id,target,round,status,started_at,ended_at,config,patterns,message,thresholds_failed"
                " FROM target_runs WHERE run_id=? ORDER BY id", (run_id,)).fetchall()
        targets = tuple(
            TargetRun(id=i, run_id=r, target=tg, round=rnd, status=st, started_at=sa, ended_at=ea,
                      config=config_from_json(None if cfg is None else json.loads(cfg)),
                      patterns=patterns_from_json(json.loads(pats)), message=msg,
                      thresholds_failed=tuple(json.loads(thr)))
            for (i, r, tg, rnd, st, sa, ea, cfg, pats, msg, thr) in trs)
        return StoredRun(meta=self._meta(row), targets=targets)

    def target_run(self, target_run_id: int) -> TargetRun:
        with self._lock:
            row = self._db.execute("SELECT run_id FROM target_runs WHERE id=?", (target_run_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"no target run {target_run_id}")
        return next(t for t in self.load(row[0]).targets if t.id == target_run_id)

    def samples(self, target_run_id: int) -> list[SecondSample]:
        with self._lock:
            rows = self._db.execute("SELECT data FROM samples WHERE target_run_id=? ORDER BY t",
                                    (target_run_id,)).fetchall()
        return [sample_from_json(json.loads(r[0])) for r in rows]

    def frame_times(self, target_run_id: int) -> list[float]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT t FROM frames WHERE target_run_id=? ORDER BY t",
                                                   (target_run_id,))]

    def frames(self, target_run_id: int, t0: float = 0.0, t1: float = math.inf, limit: int | None = None
               ) -> list[FrameRecord]:
        """Frames with t0 <= t <= t1, oldest first (at most ``limit``)."""
        q = "SELECT t, grid FROM frames WHERE target_run_id=? AND t>=? AND t<=? ORDER BY t"
        args: tuple[Any, ...] = (target_run_id, t0, 1e300 if math.isinf(t1) else t1)
        if limit is not None:
            q += " LIMIT ?"
            args = (*args, limit)
        with self._lock:
            rows = self._db.execute(q, args).fetchall()
        return [FrameRecord(t=t, grid=zlib.decompress(g)) for t, g in rows]

    def frame_at(self, target_run_id: int, t: float) -> FrameRecord | None:
        """The frame shown at ``t``: the last one at or before it (None before the first)."""
        with self._lock:
            row = self._db.execute("SELECT t, grid FROM frames WHERE target_run_id=? AND t<=? ORDER BY t DESC "
                                   "LIMIT 1", (target_run_id, t)).fetchone()
        return None if row is None else FrameRecord(t=row[0], grid=zlib.decompress(row[1]))

    def logs(self, target_run_id: int) -> list[LogLine]:
        with self._lock:
            return [LogLine(t=t, source=s, text=x) for t, s, x in self._db.execute(
                "SELECT t, source, text FROM logs WHERE target_run_id=? ORDER BY t, rowid", (target_run_id,))]

    def marks(self, target_run_id: int) -> list[Mark]:
        with self._lock:
            return [Mark(t=t, kind=k, label=lb) for t, k, lb in self._db.execute(
                "SELECT t, kind, label FROM marks WHERE target_run_id=? ORDER BY t, rowid", (target_run_id,))]

    def latest_claim_runs(self) -> dict[str, int]:
        """Plan name -> the newest complete experiment run of it."""
        with self._lock:
            rows = self._db.execute("SELECT name, MAX(id) FROM runs WHERE kind='experiment' AND status='complete'"
                                    " GROUP BY name").fetchall()
        return {name: rid for name, rid in rows}

    def size_bytes(self) -> int:
        """The file's size with its WAL (what the store costs on disk now)."""
        total = 0
        for p in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                total += p.stat().st_size
            except OSError:
                pass
        return total


class _Tx:
    """``with store._tx():`` one transaction under the store's lock (committed, or rolled back on error)."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock) -> None:
        self.db, self.lock, self.outer = db, lock, False

    def __enter__(self) -> _Tx:
        self.lock.acquire()
        self.outer = not self.db.in_transaction
        if self.outer:
            self.db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        try:
            if self.outer:
                self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
        finally:
            self.lock.release()
