"""The spare-server policy (mpmcore/master/policy.py): every branch, without a fork or a clock."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mpmcore.master import policy
from mpmcore.master.children import Child
from mpmcore.master.policy import ChildIdle, ChildrenSnapshot, LogLine, Maintenance, TickStep


def snap(mpm: str = "prefork", idle: list[int] | None = None, free: tuple[int, ...] = (), lo: int = 5,
         hi: int = 10, rate: int = 1, hold_off: int = 0, reported: bool = False, stopping: int = 0,
         ready: list[bool] | None = None) -> ChildrenSnapshot:
    idle = idle or []
    ready = ready if ready is not None else [n > 0 for n in idle]
    children = tuple(ChildIdle(pid=1000 + i, slot=i, idle=n, ready=r) for i, (n, r) in enumerate(zip(idle, ready, strict=True)))
    return ChildrenSnapshot(mpm=mpm, min_spare=lo, max_spare=hi, children=children, stopping_children=stopping,
                        free_slots=free, spawn_rate=rate, hold_off=hold_off, maxclients_reported=reported)


# -- the tick -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("stopping", "left", "deadline", "now", "remaining", "step"), [
    (False, 3, 0.0, 10.0, 0, TickStep.MAINTAIN),  # whether or not a child exited since the last tick
    (False, 3, 0.0, 10.0, 2, TickStep.START_REMAINING),  # a graceful restart still owes 2 children
    (True, 0, 0.0, 10.0, 0, TickStep.FINISH_STOP),
    (True, 0, 5.0, 10.0, 2, TickStep.FINISH_STOP),  # all gone beats the timeout
    (True, 2, 5.0, 10.0, 0, TickStep.STOP_TIMED_OUT),
    (True, 2, 15.0, 10.0, 0, TickStep.WAIT_FOR_CHILDREN),
    (True, 2, 0.0, 10.0, 1, TickStep.WAIT_FOR_CHILDREN),  # no GracefulShutdownTimeout: wait for ever
])
def test_tick_step(stopping, left, deadline, now, remaining, step):
    assert policy.tick_step(stopping, left, deadline, now, remaining) is step


# -- a reaped child ------------------------------------------------------------------------------

@pytest.mark.parametrize("mpm", ["prefork", "worker", "event"])
def test_after_a_graceful_restart_each_reaped_child_is_replaced_in_its_own_slot(mpm):
    d = policy.after_reap(mpm, 3, True, False, remaining_to_start=2, successive_kills=0, daemons_limit=8)
    assert (d.replace_in_slot, d.start_now, d.remaining_to_start) == (True, 0, 1)
    d = policy.after_reap(mpm, 3, True, False, remaining_to_start=0, successive_kills=0, daemons_limit=8)
    assert (d.replace_in_slot, d.start_now, d.remaining_to_start) == (False, 0, 0)  # the tick decides


def test_one_for_one_only_below_the_limit_and_never_beside_a_squatter():
    d = policy.after_reap("prefork", 9, True, False, remaining_to_start=2, successive_kills=0, daemons_limit=8)
    assert not d.replace_in_slot and d.remaining_to_start == 2
    d = policy.after_reap("worker", 1, False, False, remaining_to_start=2, successive_kills=0, daemons_limit=8)
    assert not d.replace_in_slot and d.remaining_to_start == 2


@pytest.mark.parametrize("mpm", ["worker", "event"])
def test_threaded_child_killed_by_a_signal_is_replaced_at_once_up_to_three_in_a_row(mpm):
    kills, started, logs = 0, [], []
    for _ in range(13):
        d = policy.after_reap(mpm, 0, True, True, remaining_to_start=0, successive_kills=kills, daemons_limit=8)
        kills = d.successive_kills
        started.append(d.start_now)
        logs.extend(d.log)
    assert started == [1, 1] + [0] * 11  # the third and later wait for the tick (which resets the count)
    assert [m.message for m in logs] == ["AH10392: children are killed successively!"] * 2  # 3rd and 13th
    # a kill while a graceful restart still owes children: its slot, and what is owed, at once
    d = policy.after_reap(mpm, 0, True, True, remaining_to_start=2, successive_kills=0, daemons_limit=8)
    assert (d.replace_in_slot, d.start_now, d.remaining_to_start) == (True, 2, 0)


def test_prefork_child_killed_by_a_signal_waits_for_the_maintenance():
    d = policy.after_reap("prefork", 0, True, True, remaining_to_start=0, successive_kills=0, daemons_limit=8)
    assert (d.replace_in_slot, d.start_now, d.successive_kills) == (False, 0, 0)


def test_child_that_exited_by_itself_waits_for_the_maintenance():
    d = policy.after_reap("event", 0, True, False, remaining_to_start=0, successive_kills=2, daemons_limit=8)
    assert (d.replace_in_slot, d.start_now, d.successive_kills) == (False, 0, 2)


# -- too few idle: spawn, doubling ----------------------------------------------------------------

def test_too_few_idle_spawns_at_the_rate_into_the_lowest_free_slots_and_doubles():
    d = policy.maintain(snap(idle=[0], free=(1, 2, 3, 4, 5, 6, 7), rate=2))
    assert d.spawn == (1, 2)
    assert d.spawn_rate == 4
    assert d.spawn_reason == "0 idle children < MinSpareServers 5"
    assert d.stop is None and d.log == ()


def test_the_doubling_sequence_from_one_child_meets_the_spares_in_four_ticks():
    # StartServers 1, MinSpareServers 5: 1 -> 2 -> 4 -> 8 children, then 8 idle >= 5
    children, rate, spawned = 1, 1, []
    for _ in range(6):
        d = policy.maintain(snap(idle=[1] * children, free=tuple(range(children, 64)), rate=rate))
        spawned.append(len(d.spawn))
        children += len(d.spawn)
        rate = d.spawn_rate
    assert spawned == [1, 2, 4, 0, 0, 0]
    assert children == 8 and rate == 1


def test_spawn_rate_is_capped_at_max_spawn_rate():
    d = policy.maintain(snap(idle=[0], free=tuple(range(1, 100)), rate=policy.MAX_SPAWN_RATE))
    assert len(d.spawn) == policy.MAX_SPAWN_RATE
    assert d.spawn_rate == policy.MAX_SPAWN_RATE


def test_spawn_is_limited_by_free_slots():
    d = policy.maintain(snap(idle=[0], free=(3,), rate=4))
    assert d.spawn == (3,)
    assert d.spawn_rate == 8


def test_hold_off_after_a_graceful_restart_spends_a_tick_instead_of_doubling():
    d = policy.maintain(snap(idle=[0], free=(1, 2, 3), rate=2, hold_off=3))
    assert d.spawn == (1, 2)
    assert d.spawn_rate == 2 and d.hold_off == 2


def test_busy_message_from_spawn_rate_8_prefork():
    d = policy.maintain(snap(idle=[0, 1], free=tuple(range(2, 20)), rate=8))
    assert d.spawn == tuple(range(2, 10))
    assert d.log == (LogLine("info", "AH00162: server seems busy, (you may need to increase StartServers, or "
                                     "Min/MaxSpareServers), spawning 8 children, there are 1 idle, and "
                                     "2 total children"),)


def test_busy_message_threaded_counts_threads_and_children_shutting_down():
    d = policy.maintain(snap(mpm="event", idle=[3, 0], free=tuple(range(2, 20)), lo=75, hi=250, rate=16,
                             stopping=4))
    assert len(d.spawn) == 16
    assert d.spawn_reason == "3 idle threads < MinSpareThreads 75"
    assert d.log == (LogLine("info", "AH00486: server seems busy, (you may need to increase StartServers, "
                                     "ThreadsPerChild or Min/MaxSpareThreads), spawning 16 children, there are "
                                     "around 3 idle threads, 2 active children, and 4 children that are "
                                     "shutting down"),)


def test_no_busy_message_below_rate_8():
    assert policy.maintain(snap(idle=[0], free=(1, 2, 3, 4), rate=4)).log == ()


# -- too few idle, no room: MaxRequestWorkers reached, said once ------------------------------------

@pytest.mark.parametrize(("mpm", "code"), [("prefork", "AH00161"), ("worker", "AH00286"), ("event", "AH00286")])
def test_max_request_workers_reached_is_logged_once(mpm, code):
    first = policy.maintain(snap(mpm=mpm, idle=[0, 0], free=(), rate=4))
    assert first.spawn == () and first.spawn_rate == 1 and first.maxclients_reported
    assert first.log == (LogLine("error", f"{code}: server reached MaxRequestWorkers setting, consider raising "
                                          "the MaxRequestWorkers setting"),)
    again = policy.maintain(snap(mpm=mpm, idle=[0, 0], free=(), rate=first.spawn_rate,
                                 reported=first.maxclients_reported))
    assert again.log == () and again.maxclients_reported


# -- enough idle -----------------------------------------------------------------------------------

@pytest.mark.parametrize("idle", [[5], [2, 3], [10], [4, 6]])
def test_idle_between_min_and_max_resets_the_rate_and_does_nothing(idle):
    d = policy.maintain(snap(idle=idle, free=(7, 8), rate=16, hold_off=4))
    assert d == Maintenance(spawn_rate=1, hold_off=4, maxclients_reported=False)


# -- too many idle: stop one per tick ----------------------------------------------------------------

def test_too_many_idle_prefork_stops_the_idle_child_in_the_highest_slot():
    # slot 3 is busy (not READY): the highest idle one is slot 2
    d = policy.maintain(snap(idle=[1, 1, 1, 0], ready=[True, True, True, False], lo=0, hi=2, rate=8))
    assert d.stop == ChildIdle(1002, 2, 1, True)
    assert d.spawn == () and d.spawn_rate == 1
    assert d.log == (LogLine("info", "maintenance: stopping idle child pid 1002 in slot 2 "
                                     "(3 idle children > MaxSpareServers 2)"),)


def test_prefork_child_still_starting_is_idle_but_not_stopped():
    d = policy.maintain(snap(idle=[1, 1], ready=[False, False], lo=0, hi=1))
    assert d.stop is None and d.log == () and d.spawn_rate == 1


@pytest.mark.parametrize("mpm", ["worker", "event"])
def test_too_many_idle_threaded_stops_the_child_in_the_highest_slot(mpm):
    d = policy.maintain(snap(mpm=mpm, idle=[25, 25, 25], ready=[False, False, False], lo=25, hi=50))
    assert d.stop is not None and d.stop.slot == 2
    assert d.log == (LogLine("info", "maintenance: stopping idle child pid 1002 in slot 2 "
                                     "(75 idle threads > MaxSpareThreads 50)"),)


def test_an_event_child_not_accepting_has_no_spare_threads():
    # two children with 25 idle threads each, one of them full of parked connections (idle 0)
    d = policy.maintain(snap(mpm="event", idle=[25, 0], free=(2, 3), lo=30, hi=250))
    assert d.spawn == (2,)


# -- free slots ----------------------------------------------------------------------------------

def child(pid: int, slot: int, gen: int = 1, mpm: str = "worker", quiescing: bool = False) -> Child:
    return Child(pid=pid, slot=slot, generation=gen, mpm=mpm, threads=25, quiescing=quiescing)


def test_free_slots_prefork_up_to_max_request_workers_minus_occupied_and_pool():
    kids = [child(1, 0, mpm="prefork"), child(2, 2, gen=0, mpm="prefork")]
    assert policy.free_slots("prefork", 1, 256, 5, 5, kids, [4]) == [1, 3]


def test_free_slots_none_once_the_current_generation_fills_max_children():
    kids = [child(1, 0), child(2, 1)]
    assert policy.free_slots("worker", 1, 16, 50, 2, kids, []) == []
    assert policy.free_slots("event", 1, 16, 50, 2, kids, []) == []


def test_free_slots_worker_squats_slots_of_children_on_their_way_out():
    kids = [child(1, 0), child(2, 1, gen=0), child(3, 2, quiescing=True), child(4, 3, gen=0, mpm="event")]
    # slot 1 (old generation) and 2 (told to stop) are squattable, after the empty ones; 3 is held
    # by another MPM's child
    assert policy.free_slots("worker", 1, 16, 150, 6, kids, []) == [4, 5, 1, 2]


def test_startup_slots_are_the_ones_no_process_holds():
    kids = [child(1, 0), child(2, 1, gen=0, quiescing=True)]
    assert policy.startup_slots(5, kids, [3]) == [2, 4]


def test_free_slots_event_never_squats_and_leaves_the_pool_alone():
    kids = [child(1, 0, mpm="event"), child(2, 1, gen=0, mpm="event")]
    assert policy.free_slots("event", 1, 4, 400, 16, kids, [3]) == [2]


def test_snapshot_idle_is_the_sum_over_children():
    s = snap(idle=[3, 0, 2])
    assert s.idle == 5
    assert replace(s, children=()).idle == 0
