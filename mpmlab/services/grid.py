"""The scoreboard grid as a compact binary frame, read straight from shared memory at 20 Hz.

Why not a full ``ScoreboardReader.snapshot()`` per frame: the segment holds every slot of the
largest ServerLimit x ThreadLimit any MPM may use (256 x 64 = 16384 records of 336 bytes with the
defaults), and the grid needs one byte of each. A status is a single byte written in one store by
its one writer, so reading it alone can never be torn; it needs no seqlock. The request pattern
(24 bytes) can be torn, so it is read under the record's sequence counter, and only for busy slots
whose sequence moved since the last frame. The full snapshot (for the numbers) is taken at a lower
rate by the sampler.

Frame layout (little-endian), decoded by static/js/scoreboard.js:

    0  u8  magic 0x4D ('M')          1  u8  version (1)
    2  u8  MPM (0 prefork, 1 worker, 2 event, 255 core down)
    3  u8  flags (bit0: the pattern table changed since the previous frame)
    4  u32 sequence                  8  f64 server time, ms since the epoch
   16  u32 running generation       20  u16 rows (process slots shown)
   22  u16 cols (thread slots shown per process)
   24  u16 ThreadsPerChild          26  u16 patterns in the table
   28  rows*cols status bytes (Apache's numbering: 0 '.', 1 S, 2 _, 3 R, 4 W, 5 K, 6 L, 7 D, 8 C, 9 G, 10 I)
       rows*cols pattern indices (0 = none, n = table[n-1], 255 = table full)
       rows row flags (bit0 process alive, bit1 stopping, bit2 old generation, bit3 not accepting,
                       bit4 FastCGI pool process)
       rows u32 pids
       rows u32 generations
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from mpmcore import scoreboard as sb

MAGIC, VERSION = 0x4D, 1
HEADER = struct.Struct("<BBBBIdIHHHH")
CORE_DOWN = 255
ROW_ALIVE, ROW_STOPPING, ROW_OLD_GEN, ROW_NOT_ACCEPTING, ROW_FCGI = 1, 2, 4, 8, 16
MAX_PATTERNS = 254  # pattern indices are one byte; 255 means "one more than the table holds"
PATTERN_FULL = 255
# states that hold a request (READY, STARTING and DEAD have none)
_NO_REQUEST = {sb.DEAD, sb.READY, sb.STARTING}

_W_STATUS = sb.WorkerRecord.status.offset
_W_PATTERN = sb.WorkerRecord.pattern.offset
_P_PID, _P_GEN = sb.ProcessRecord.pid.offset, sb.ProcessRecord.generation.offset
_P_KIND, _P_QUIESCING = sb.ProcessRecord.kind.offset, sb.ProcessRecord.quiescing.offset
_C_PID, _C_NOT_ACCEPTING = sb.ChildRecord.pid.offset, sb.ChildRecord.not_accepting.offset
_U32 = struct.Struct("<I")


@dataclass
class Layout:
    rows: int
    cols: int
    threads_per_child: int


def shown_layout(statuses: bytes, pids: list[int], tc: int, mpm: int, tpc: int, mrw: int) -> Layout:
    """Rows and columns to draw: the slots MaxRequestWorkers allows (as mod_status), plus any live
    slot beyond them (old generations finishing after a switch, a larger old ThreadsPerChild)."""
    procs = len(pids)
    tpc = 1 if mpm == 0 else max(1, tpc)
    base_rows = min(procs, max(1, math.ceil(mrw / tpc)))
    rows = base_rows
    cols = min(tc, tpc)
    zero = bytes(tc)
    for p in range(procs - 1, -1, -1):
        if pids[p] or statuses[p * tc:(p + 1) * tc] != zero:
            rows = max(rows, p + 1)
            break
    if cols < tc:
        for p in range(rows):
            tail = statuses[p * tc + cols:(p + 1) * tc]
            if tail != zero[:len(tail)]:
                cols = max(cols, len(tail.rstrip(b"\x00")) + cols)
    return Layout(rows, cols, tpc)


class GridReader:
    """Builds grid frames from a ScoreboardReader's mapping."""

    def __init__(self, reader: sb.ScoreboardReader) -> None:
        self.reader = reader
        self.patterns: list[str] = []  # index + 1 is the byte sent
        self._pattern_ids: dict[bytes, int] = {}
        self._seq_cache: list[int] = []
        self._pat_cache: bytearray = bytearray()
        self._table_changed = False
        self.seq = 0

    def _pattern_id(self, raw: bytes) -> int:
        pid = self._pattern_ids.get(raw)
        if pid is None:
            if len(self.patterns) >= MAX_PATTERNS:
                return PATTERN_FULL
            self.patterns.append(raw.decode("utf-8", "replace"))
            pid = self._pattern_ids[raw] = len(self.patterns)
            self._table_changed = True
        return pid

    def frame(self, now_ms: float) -> tuple[bytes, bytes, Layout]:
        """(frame bytes, what the frame shows, layout). What it shows is every byte but its sequence
        number, clock and pattern-table flag: two frames with the same content draw the same page,
        and a frame whose MPM, generation, rows, pids or flags changed while the letters did not
        (worker's 75 idle threads become event's 75) differs from the one before."""
        r = self.reader
        g = sb.GlobalRecord.from_buffer_copy(r.mm, 0)
        if g.superseded:
            r.snapshot()  # re-attaches to the new segment (hard restart with other limits)
            self._seq_cache = []
            g = sb.GlobalRecord.from_buffer_copy(r.mm, 0)
        mm = r.mm
        procs, tc = r.proc_capacity, r.thread_capacity
        nslots = procs * tc
        w_off, p_off, c_off = r._w_off, r._p_off, r._c_off
        with memoryview(mm) as mv:
            statuses = bytes(mv[w_off + _W_STATUS: w_off + nslots * sb.W_SIZE: sb.W_SIZE])
            seqs = mv[w_off: w_off + nslots * sb.W_SIZE].cast("I")[:: sb.W_SIZE // 4].tolist()
            prec = bytes(mv[p_off: p_off + procs * sb.P_SIZE])
            crec = bytes(mv[c_off: c_off + procs * sb.C_SIZE])
        pids = memoryview(prec).cast("i")[_P_PID // 4:: sb.P_SIZE // 4].tolist()
        gens = memoryview(prec).cast("I")[_P_GEN // 4:: sb.P_SIZE // 4].tolist()
        kinds = prec[_P_KIND:: sb.P_SIZE]
        quiescing = prec[_P_QUIESCING:: sb.P_SIZE]
        c_pids = memoryview(crec).cast("i")[_C_PID // 4:: sb.C_SIZE // 4].tolist()
        not_acc = memoryview(crec).cast("I")[_C_NOT_ACCEPTING // 4:: sb.C_SIZE // 4].tolist()

        # G is written by the children themselves (per MPM), so the letters are shown as read

        lay = shown_layout(statuses, pids, tc, g.mpm, g.threads_per_child, g.max_request_workers)
        rows, cols = lay.rows, lay.cols

        # patterns: only busy slots, only when their record changed
        if len(self._seq_cache) != nslots:
            self._seq_cache = [-1] * nslots
            self._pat_cache = bytearray(nslots)
        cache_seq, cache_pat = self._seq_cache, self._pat_cache
        for idx in [i for i, st in enumerate(statuses[: rows * tc]) if st not in _NO_REQUEST]:
            s = seqs[idx]
            if s == cache_seq[idx] or s & 1:
                continue
            o = w_off + idx * sb.W_SIZE
            raw = mm[o + _W_PATTERN: o + _W_PATTERN + sb.PATTERN_LEN]
            if _U32.unpack(mm[o:o + 4])[0] != s:
                continue  # written meanwhile: keep the old value, try next frame
            raw = raw.split(b"\x00", 1)[0]
            cache_pat[idx] = self._pattern_id(raw) if raw else 0
            cache_seq[idx] = s

        if cols == tc:
            region = statuses[: rows * tc]
            pats = bytes(cache_pat[: rows * tc])
        else:
            region = b"".join(statuses[p * tc: p * tc + cols] for p in range(rows))
            pats = b"".join(bytes(cache_pat[p * tc: p * tc + cols]) for p in range(rows))
        # a slot that holds no request shows no pattern, whatever it held last
        if pats.count(0) != len(pats):
            pats = bytes(0 if st in _NO_REQUEST else pt for st, pt in zip(region, pats, strict=True))

        flags = bytearray(rows)
        run_gen = g.running_generation
        for p in range(rows):
            if pids[p]:
                f = ROW_ALIVE
                if quiescing[p]:
                    f |= ROW_STOPPING
                if gens[p] != run_gen:
                    f |= ROW_OLD_GEN
                if not_acc[p] and c_pids[p] == pids[p]:
                    f |= ROW_NOT_ACCEPTING
                if kinds[p] == sb.KIND_FCGI:
                    f |= ROW_FCGI
                flags[p] = f
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        table_flag = 1 if self._table_changed else 0
        self._table_changed = False
        head = HEADER.pack(MAGIC, VERSION, g.mpm, table_flag, self.seq, now_ms, run_gen, rows, cols,
                           lay.threads_per_child, len(self.patterns))
        body = b"".join((head, region, pats, bytes(flags),
                         struct.pack(f"<{rows}I", *[max(0, x) for x in pids[:rows]]),
                         struct.pack(f"<{rows}I", *gens[:rows])))
        return body, body[2:3] + body[_SHOWN_FROM:], lay


#: where a frame's content starts after its sequence number and clock (HEADER: magic, version, mpm,
#: table flag, seq, now_ms, then the running generation and the rest)
_SHOWN_FROM = struct.calcsize("<BBBBId")


def core_down_frame(seq: int, now_ms: float) -> bytes:
    return HEADER.pack(MAGIC, VERSION, CORE_DOWN, 0, seq, now_ms, 0, 0, 0, 1, 0)
