""""What is happening" (mpmlab/services/insights.py): its rules read constructed Summaries, no process."""

from __future__ import annotations

import dataclasses

from mpmcore.model import NginxCounts, ProcessRow, Summary, count_states
from mpmlab.services.insights import describe, describe_nginx

CHILD = ProcessRow(slot=0, pid=10, generation=1, mpm="worker", accepting=True)


def summary(letters: str = "", **kw: object) -> Summary:
    base: dict[str, object] = dict(mpm="worker", current_time=0.0, busy=400, idle=0, graceful=0,
                                   max_request_workers=400, state_counts=count_states(letters), procs=(CHILD,),
                                   mpm_generation=2)
    base.update(kw)
    return Summary(**base)  # type: ignore[arg-type]  # the keyword values are the fields' own types


def test_keep_alive_saturation_under_worker_says_event_would_park_them() -> None:
    i = describe(summary("K" * 390 + "W" * 10), {"directives": {"KeepAliveTimeout": 5.0}})
    assert i.level == "crit" and "all 400 threads hold idle keep-alive connections (K)" in i.headline
    assert "event would park them" in i.headline and "KeepAliveTimeout 5.0s" in i.headline


def test_slow_readers_are_called_slowloris() -> None:
    assert "slowloris" in describe(summary("R" * 380 + "W" * 20)).headline


def test_idle_and_stopped() -> None:
    assert describe(summary(busy=0, idle=75)).level == "ok"
    assert "no child process" in describe(summary(procs=())).headline
    # the FastCGI pool is not a child: alone it does not count as running
    pool = dataclasses.replace(CHILD, kind="fcgi")
    assert "no child process" in describe(summary(procs=(pool,))).headline


def test_near_saturation_warns_with_the_share() -> None:
    i = describe(summary("W" * 330, busy=330, idle=70))
    assert i.level == "warn" and "330 of 400 threads busy (82% of MaxRequestWorkers)" in i.headline


def test_event_children_not_accepting_say_what_the_master_does() -> None:
    full = dataclasses.replace(CHILD, mpm="event", accepting=False)
    ev = summary("R" * 10, mpm="event", busy=10, idle=115, procs=(full,) * 5)
    i = describe(ev, {"directives": {"ServerLimit": 16}})
    assert "every child stopped accepting" in i.headline and "although 115 workers are idle" in i.headline
    assert "the master starts more children (5 of ServerLimit 16)" in i.headline, i.headline
    assert "ServerLimit 16 reached" in describe(dataclasses.replace(ev, procs=(full,) * 16),
                                                {"directives": {"ServerLimit": 16}}).headline
    assert "ServerLimit" not in describe(ev).headline  # an attached Apache: mod_status does not print it
    # unknown (None: an attached Apache without its process table) is not "not accepting"
    unknown = dataclasses.replace(CHILD, mpm="event", accepting=None)
    assert "stopped accepting" not in describe(dataclasses.replace(ev, procs=(unknown,))).headline


def test_graceful_restart_names_the_switch_and_the_G_slots() -> None:
    old = dataclasses.replace(CHILD, mpm="event", old_gen=True, stopping=True)
    new = dataclasses.replace(CHILD, slot=1, generation=2)
    i = describe(summary("GGG" + "_" * 7, busy=0, idle=7, procs=(old, new)))
    texts = [i.headline, *i.details]
    assert any("graceful restart in progress (switch from event to worker)" in t and "3 G slots" in t
               and "generation 2" in t for t in texts), texts


def test_parked_keep_alive_under_event_is_good_news() -> None:
    ev = summary("W" + "_" * 9, mpm="event", busy=1, idle=9, conns_async_keep_alive=12,
                 procs=(dataclasses.replace(CHILD, mpm="event"),))
    i = describe(ev)
    assert any("12 keep-alive connections parked in the listener" in t for t in [i.headline, *i.details])


def test_an_attached_apache_without_mrw_still_reads() -> None:
    # mod_status prints no MaxRequestWorkers: the words leave it out rather than divide by it
    i = describe(summary("W" * 5 + "_" * 5, busy=5, idle=5, max_request_workers=None))
    assert i.level == "ok" and "MaxRequestWorkers" not in i.headline


def test_nginx_counts_are_said_as_they_are() -> None:
    i = describe_nginx(NginxCounts(active=3, accepts=10, handled=10, requests=25, reading=0, writing=1, waiting=2))
    assert i.level == "info" and i.headline.startswith("3 connections: 0 reading a request, 1 writing a reply, 2 idle")
    assert i.details and "no scoreboard" in i.details[0]


def test_unknown_accepting_is_not_an_alarm() -> None:
    """An attached event Apache whose process table was not read has accepting = None for every
    child: unknown, so no 'every child stopped accepting' (only False says so)."""
    unknown = dataclasses.replace(CHILD, mpm="event", accepting=None)
    base = summary("RR" + "_" * 48, mpm="event", busy=2, idle=48, max_request_workers=None, procs=(unknown,) * 2)
    i = describe(base)
    assert "stopped accepting" not in i.headline and not any("stopped accepting" in x for x in i.details), i
    full = dataclasses.replace(unknown, accepting=False)
    assert "every child stopped accepting" in describe(dataclasses.replace(base, procs=(full,) * 2)).headline


def test_graceful_restart_under_worker_without_g_and_prefork_says_its_difference() -> None:
    # worker's busy old threads keep their R/W/K (no G on the board): still a restart in progress
    old = dataclasses.replace(CHILD, old_gen=True, stopping=True)
    new = dataclasses.replace(CHILD, slot=1, generation=2)
    texts = (lambda i: [i.headline, *i.details])(describe(summary("RK" + "_" * 8, busy=2, idle=8, procs=(old, new))))
    assert any("graceful restart in progress: 1 old child finishes its requests" in t and "keeps their R/W/K" in t
               for t in texts), texts
    assert not any("Apache's prefork" in t for t in texts)
    # prefork: the measured difference from Apache is said during the restart, not left silent
    p_old = dataclasses.replace(old, mpm="prefork")
    p_new = dataclasses.replace(new, mpm="prefork")
    i = describe(summary("G" + "_" * 4, mpm="prefork", busy=0, idle=4, procs=(p_old, p_new)))
    assert any("requests still being read are answered (Apache's prefork would answer them 400" in t
               for t in [i.headline, *i.details])
    # an idle child stopped by spare maintenance (not an old generation, no G) is not a restart
    idle_stop = dataclasses.replace(CHILD, stopping=True)
    i = describe(summary("_" * 5, busy=0, idle=5, procs=(idle_stop, new)))
    assert not any("graceful restart" in t for t in [i.headline, *i.details])


def test_fast_short_requests_are_not_called_idle() -> None:
    """One request at a time at 2,000 req/s: the instant's board shows one busy slot or none, and the
    words say the server is serving, at what rate, and why the board looks empty."""
    s = summary("W" + "_" * 74, mpm="event", busy=1, idle=74)
    i = describe(s, rps=2013.4)
    assert not i.headline.startswith("idle") and i.level == "ok"
    assert i.headline.startswith("serving 2,013 requests/s with 1 busy and 74 idle threads at this instant")
    assert "only while it is in flight" in i.headline
    quiet = describe(dataclasses.replace(s, busy=0, idle=75), rps=0.0)
    assert quiet.headline.startswith("idle: 75 threads wait")
    assert describe(dataclasses.replace(s, busy=0, idle=75), rps=None).headline.startswith("idle:")
