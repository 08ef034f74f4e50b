"""The scoreboard's fast write paths (mpmcore/scoreboard.py): an event child's counters through one
precompiled struct, SlotWriter.set, set_pattern, read back by a reader of the same segment."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from mpmcore import scoreboard as sb


@pytest.fixture
def board():
    b = sb.Scoreboard.create(f"/mpmlab_test_{uuid.uuid4().hex[:12]}", 2, 4)
    yield b
    b.unlink()
    b.close()


def test_child_counters_land_in_their_fields_with_an_even_sequence(board):
    board.child_counters(1).publish(4242, 1, 17, 2, 3, 11)
    with sb.ScoreboardReader(board.name) as r:
        c = r.snapshot().children[1]
        assert (c.pid, c.not_accepting, c.connections, c.write_completion, c.lingering_close, c.keep_alive) == (
            4242, 1, 17, 2, 3, 11)
        assert c.seq == 2 and (c.suspended, c.wait_io) == (0, 0)
        other = r.snapshot().children[0]
        assert (other.pid, other.connections) == (0, 0)  # the neighbour record is untouched


def test_child_counters_out_of_range_wrap_as_ctypes_and_never_raise(board):
    # raising here would kill the listener or a worker thread (it publishes under the counters lock)
    board.child_counters(0).publish(1, 0, -1, 0, 0, 0)
    c = board.children[0]
    assert c.connections == 2**32 - 1 and c.seq % 2 == 0


def test_set_writes_status_and_time_once_per_change(board):
    slot = board.slot(0, 2)
    slot.claim(1, 1, 1, sb.READY)
    before = time.time()
    seq = slot.rec.seq
    slot.set(sb.BUSY_READ)
    assert slot.rec.status == sb.BUSY_READ and slot.rec.seq == seq + 2
    assert before <= slot.rec.state_since <= time.time()
    slot.set(sb.BUSY_READ)  # no change: no write
    assert slot.rec.seq == seq + 2


def test_set_under_a_stopping_event_child_shows_graceful(board):
    slot = board.slot(0, 0)
    slot.claim(1, 1, 1, sb.READY)
    slot.lock, slot.sticky = threading.Lock(), threading.Event()
    slot.sticky.set()
    slot.set(sb.BUSY_READ)
    assert slot.rec.status == sb.GRACEFUL and not slot.lock.locked()
    slot.set(sb.DEAD)
    assert slot.rec.status == sb.DEAD


def test_set_pattern_writes_only_a_change(board):
    slot = board.slot(1, 3)
    slot.claim(1, 1, 1, sb.READY)
    seq = slot.rec.seq
    slot.set_pattern(None)  # already empty
    assert slot.rec.seq == seq
    slot.set_pattern("slowloris")
    assert slot.rec.pattern == b"slowloris" and slot.rec.seq == seq + 2
    slot.set_pattern(None)
    assert slot.rec.pattern == b"" and slot.rec.seq == seq + 4
