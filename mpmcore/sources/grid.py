"""An attached server's scoreboard as the dashboard's binary grid frame.

The layout is mpmlab.services.grid's (version 1), so an attached Apache's grid draws with the same
static/js/scoreboard.js; tests/external/test_attach.py checks that the two headers stay the same.
"""

from __future__ import annotations

import struct
import time

from mpmcore.model import SourceFrame
from mpmcore.scoreboard import MPM_IDS, STATE_LETTERS

GRID_HEADER = struct.Struct("<BBBBIdIHHHH")
GRID_MAGIC, GRID_VERSION, GRID_NO_SERVER = 0x4D, 1, 255
#: The MPM byte of a server with a scoreboard but no MPM (lighttpd): not "down", no MPM name.
GRID_NO_MPM = 254
ROW_ALIVE, ROW_STOPPING, ROW_OLD_GEN, ROW_NOT_ACCEPTING = 1, 2, 4, 8
_STATE_BY_LETTER = {ch: i for i, ch in enumerate(STATE_LETTERS)}


def grid_frame(frame: SourceFrame, seq: int = 0, now_ms: float | None = None) -> bytes | None:
    """The binary grid frame for a frame with a scoreboard; None without one (nginx, errors).
    Pattern indices are all 0: Apache does not show patterns."""
    if not frame.ok or not frame.letters or frame.layout is None or frame.summary is None:
        return None
    s = frame.summary
    lay = frame.layout
    rows, cols = lay.rows, lay.cols
    letters = frame.letters.ljust(rows * cols, ".")[: rows * cols]
    statuses = bytes(_STATE_BY_LETTER.get(ch, 0) for ch in letters)
    flags = bytearray(rows)
    pids = [0] * rows
    gens = [0] * rows
    run_gen = s.mpm_generation or 0
    for p in s.procs:
        if p.slot is None or not 0 <= p.slot < rows:
            continue
        f = ROW_ALIVE
        if p.stopping:
            f |= ROW_STOPPING
        if p.old_gen:
            f |= ROW_OLD_GEN
        if p.accepting is False:
            f |= ROW_NOT_ACCEPTING
        flags[p.slot] = f
        pids[p.slot] = max(0, p.pid or 0)
        gens[p.slot] = p.generation if p.generation is not None else run_gen
    head = GRID_HEADER.pack(GRID_MAGIC, GRID_VERSION, MPM_IDS.get(s.mpm, GRID_NO_MPM), 0,
                            seq & 0xFFFFFFFF, time.time() * 1000 if now_ms is None else now_ms, run_gen & 0xFFFFFFFF,
                            rows, cols, lay.threads_per_child, 0)
    return b"".join((head, statuses, bytes(rows * cols), bytes(flags), struct.pack(f"<{rows}I", *pids),
                     struct.pack(f"<{rows}I", *[g & 0xFFFFFFFF for g in gens])))
