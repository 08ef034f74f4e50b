"""event's per-child counters (mpmcore/mpm/event.py ``Counters``): each named operation moves
the right counters and publishes once; the accept rule reads them."""

from __future__ import annotations

import pytest

from mpmcore.mpm.event import KA, LINGER, WRITE, Counters, Queue


class Published:
    """What the scoreboard record would receive, one entry per publish."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, dict[Queue, int], bool]] = []

    def __call__(self, c: Counters) -> None:
        assert c.lock.locked()  # published under the counters' lock, as the record's one writer
        self.seen.append((c.idle, c.connections, dict(c.queued), c.not_accepting))


@pytest.fixture
def counters() -> tuple[Counters, Published]:
    pub = Published()
    return Counters(pub), pub


def test_a_connection_through_the_queues(counters):
    c, pub = counters
    c.worker_idle()
    c.connection_opened()
    assert c.take_idle_worker()
    c.worker_idle()  # the worker finished the request
    c.parked(KA)
    c.unparked(KA)
    c.parked(LINGER)
    c.unparked(LINGER)
    c.connection_closed()
    assert (c.idle, c.connections, c.queued) == (1, 0, {KA: 0, WRITE: 0, LINGER: 0})
    assert len(pub.seen) == 9  # every operation published
    assert pub.seen[4] == (1, 1, {KA: 1, WRITE: 0, LINGER: 0}, False)


def test_take_idle_worker_refuses_when_none_is_idle(counters):
    c, pub = counters
    assert not c.take_idle_worker()
    assert c.idle == 0 and pub.seen == []  # nothing moved, nothing published


def test_closing_the_keepalive_queue_moves_both_counts_in_one_publish(counters):
    c, pub = counters
    for _ in range(3):
        c.connection_opened()
        c.parked(KA)
    pub.seen.clear()
    c.closed_from_queue(KA, 3)
    assert pub.seen == [(0, 0, {KA: 0, WRITE: 0, LINGER: 0}, False)]


def test_set_accepting_publishes_not_accepting(counters):
    c, pub = counters
    c.set_accepting(False)
    c.set_accepting(True)
    assert [s[3] for s in pub.seen] == [True, False]


@pytest.mark.parametrize(("idle", "connections", "lingering", "allowed"), [
    (0, 0, 0, False),  # no idle worker: never accept
    (1, 26, 0, True),  # 26 < 25 + 1 x 2
    (1, 27, 0, False),  # 27 is the limit
    (1, 28, 2, True),  # lingering connections do not count: 28 - 2 < 27
    (2, 28, 0, True),  # 28 < 25 + 2 x 2
])
def test_accepting_allowed_is_apaches_connections_above_limit(idle, connections, lingering, allowed):
    c = Counters(lambda _: None)
    c.idle, c.connections, c.queued[LINGER] = idle, connections, lingering
    assert c.accepting_allowed(threads_per_child=25, factor=2) is allowed


def test_parking_worker_counts_itself_idle_in_the_same_publish(counters):
    c, pub = counters
    c.connection_opened()
    c.parked(KA, worker_idle=True)
    assert pub.seen[-1] == (1, 1, {KA: 1, WRITE: 0, LINGER: 0}, False)
    assert len(pub.seen) == 2


def test_unparked_to_worker_reserves_the_idle_worker_in_one_publish(counters):
    c, pub = counters
    c.connection_opened()
    c.parked(KA, worker_idle=True)
    pub.seen.clear()
    assert c.unparked_to_worker(KA)
    assert pub.seen == [(0, 1, {KA: 0, WRITE: 0, LINGER: 0}, False)]


def test_unparked_to_worker_without_an_idle_worker_still_leaves_the_queue(counters):
    c, pub = counters
    c.connection_opened()
    c.parked(KA)
    pub.seen.clear()
    assert not c.unparked_to_worker(KA)  # the caller closes it
    assert (c.idle, c.queued[KA]) == (0, 0) and len(pub.seen) == 1


def test_a_failed_park_still_counts_the_worker_idle(counters):
    c, pub = counters
    c.connection_opened()
    c.connection_closed(worker_idle=True)
    assert (c.idle, c.connections) == (1, 0) and len(pub.seen) == 2
