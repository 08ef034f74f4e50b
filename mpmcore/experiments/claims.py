"""The essay's nine claims as measured verdicts.

Each claim names the built-in plan that measures it (``builtin/claim-*.toml``, whose ``claim`` key
is the claim's key) and a verdict rule that reads a stored run of that plan: its target runs' whole
figures (``PatternResult.total``, the HDR histograms) and their per-second samples (scoreboard
states, parked connections, PSS). A rule answers **holds**, **holds partly**, **does not hold
here**, **not comparable** (the targets that ran cannot do what the claim needs) or **not run**
(no complete run, or its targets were skipped), with ``why`` (the figures in a sentence) and the
``figures`` themselves.

Structural claims (2's busy slots, 4, 5, 6, 8) are read from counts: slots in K, parked
connections, probe requests that waited, mixed-up answers. Speed and size claims (1, 3, 9) compare
medians over the run's rounds with their spread (max - min): a difference within the spread is
"holds partly", never "holds". docs/claims.md describes each claim, its plan and its rule.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from hdrh.histogram import HdrHistogram

from mpmcore.experiments.model import (
    ClaimResult,
    PatternResult,
    SecondSample,
    StoredRun,
    TargetRun,
    Verdict,
)
from mpmcore.experiments.store import RunStore, StoreError, default_path

__all__ = ["CLAIMS", "Claim", "Finding", "add_claims_commands", "latest_results", "verdict_for"]


# -- thresholds (each with why) ---------------------------------------------------------------------
#: A probe request (a new client's "/" on a fresh connection) answered later than this waited for a
#: thread: on loopback "/" takes a few ms, and 1 s is still well below the plans' KeepAliveTimeout
#: (5 s), the time a held thread is given back at the latest.
STARVED_MS = 1000.0
#: Claim 4 holds when at least this share of the probe's requests waited or timed out: the probe's
#: very first request may get a thread before the browsers fill them all, the rest must not.
STARVED_SHARE_HOLDS = 0.5
#: Claims 5/6: a probe "served promptly" has at most this share of its requests waiting (a slow
#: moment of a loaded 2-core machine is not starvation).
STARVED_SHARE_PROMPT = 0.1
#: Claims 4, 6: a status page left unanswered this long (no frame for it, where ~10 come a second)
#: means no thread was free to take it: a real Apache's mod_status is a request like any other,
#: so its frames stall exactly while every thread is held, and its K count cannot be read then.
STATUS_STALL_S = 2.0
#: Claim 2: requests "wait in line" when their median latency is at least this many times the
#: server's own work per request (/sleep?ms=N): with C clients on S < C slots a FIFO queue gives
#: about C/S times (3x in the plan); 1.5x leaves room for the queue filling and draining.
QUEUE_FACTOR = 1.5
#: Claim 3: prefork's PSS per slot must be at least this many times the threaded MPMs' to "grow
#: with its process count" (a process per slot against a thread per slot: Python processes share
#: their pages copy-on-write, Apache's children too, so the ratio is far from slots:1, but a
#: forked interpreter still dirties more than a thread's stack).
RAM_FACTOR = 1.5
#: Claim 7: a model "needs a slot per connection" for a pattern when its peak busy slots reach this
#: share of the pattern's connections (or of the slots, when there are fewer slots than connections).
HOLDS_SLOTS_SHARE = 0.8
#: Claim 7: a model "does not need" a slot per idle connection when its peak busy slots stay below
#: this share of the pattern's connections.
FREES_SLOTS_SHARE = 0.5
#: Stage names whose samples the rules ignore (traffic not counted).
WARMUP_STAGES = ("warmup", "")

# -- building blocks ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """What a rule says: the claim's fields come from its Claim."""

    verdict: Verdict
    why: str
    figures: dict[str, float | int | str | None]


Rule = Callable[[StoredRun, RunStore], Finding]


@dataclass(frozen=True, slots=True)
class Claim:
    key: str
    number: int
    title: str
    sentence: str  # the essay's
    plan: str  # the built-in plan measuring it (its ``claim`` key is ``key``)
    conditions: str
    rule: Rule

    def judge(self, run: StoredRun | None, store: RunStore | None) -> ClaimResult:
        """The verdict of this claim on ``run`` (None: never run). A rule that cannot read the run
        (a run of an older plan, a missing figure) says "not run" with the reason; it never raises."""
        if run is None or store is None:
            f = Finding("not run", f"no complete run of plan {self.plan!r} yet: mpmlab experiment run {self.plan}", {})
        else:
            try:
                f = self.rule(run, store)
            except _Missing as e:
                f = Finding("not run", str(e), {})
        return ClaimResult(claim=self.key, number=self.number, title=self.title, verdict=f.verdict, why=f.why,
                           figures=f.figures, conditions=self.conditions,
                           run_id=None if run is None else run.meta.id)


class _Missing(LookupError):
    """The run lacks what the rule reads (its message says what)."""


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def _spread(xs: Sequence[float]) -> float:
    return float(max(xs) - min(xs)) if xs else 0.0


def _ok_runs(run: StoredRun) -> dict[str, list[TargetRun]]:
    """Complete target runs by target name, rounds in order."""
    out: dict[str, list[TargetRun]] = {}
    for tr in sorted(run.targets, key=lambda t: t.round):
        if tr.status == "complete":
            out.setdefault(tr.target, []).append(tr)
    return out


def _skipped(run: StoredRun) -> dict[str, str]:
    """Targets that never completed, with their reason."""
    ok = _ok_runs(run)
    return {tr.target: tr.message or tr.status for tr in run.targets if tr.target not in ok}


def _pattern(tr: TargetRun, label: str) -> PatternResult:
    for p in tr.patterns:
        if p.label == label:
            return p
    raise _Missing(f"{tr.target} round {tr.round} has no figures for pattern {label!r}")


def _num(total: dict[str, Any], *path: str) -> float | None:
    v: Any = total
    for k in path:
        if not isinstance(v, dict) or v.get(k) is None:
            return None
        v = v[k]
    return float(v) if isinstance(v, (int, float)) else None


def _stage_samples(store: RunStore, tr: TargetRun, stage: str | None = None) -> list[SecondSample]:
    ss = [s for s in store.samples(tr.id) if s.stage not in WARMUP_STAGES]
    return ss if stage is None else [s for s in ss if s.stage == stage]


def _peak(values: Iterable[int | None]) -> int | None:
    vs = [v for v in values if v is not None]
    return max(vs) if vs else None


def _peak_state(samples: Sequence[SecondSample], letter: str) -> int | None:
    return _peak(None if s.states is None else s.states.get(letter, 0) for s in samples)  # type: ignore[call-overload]


def _slots(tr: TargetRun) -> int | None:
    cfg = tr.config
    if cfg is None:
        return None
    v = cfg.settings.get("MaxRequestWorkers")
    return int(v) if v and v.isdigit() else None


def _starved(p: PatternResult) -> tuple[int, int]:
    """(requests that waited >= STARVED_MS or got no answer, requests sent) of a probe pattern."""
    total = p.total
    sent = int(total.get("requests", 0))
    errors = int(total.get("errors_total", 0))
    enc = p.histograms.get("latency")
    slow: int
    if enc:
        h = HdrHistogram.decode(enc.encode() if isinstance(enc, str) else enc)
        limit_us = STARVED_MS * 1000.0
        slow = sum(int(i.count_at_value_iterated_to) for i in h.get_recorded_iterator()
                   if i.value_iterated_to >= limit_us)
    else:  # no histogram stored: the median tells whether at least half waited
        p50 = _num(total, "latency_ms", "p50")
        responses = int(total.get("responses", 0))
        slow = responses if p50 is not None and p50 >= STARVED_MS else 0
    return slow + errors, max(sent, slow + errors)


def _fmt_ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f} ms"


def _mib(v: float | None) -> str:
    return "n/a" if v is None else f"{v / 1048576:.2f} MiB"


def _kib(v: float | None) -> str:
    return "n/a" if v is None else f"{v / 1024:.0f} KiB"


def _compare(better: float, worse: float, spread: float, lower_is_better: bool) -> str:
    """"yes" when ``better`` beats ``worse`` by more than ``spread``, "within" inside it, "no" else."""
    d = (worse - better) if lower_is_better else (better - worse)
    if abs(d) <= spread:
        return "within"
    return "yes" if d > 0 else "no"


def _combine(outcomes: Sequence[str]) -> Verdict:
    """Several comparisons, each "yes" / "within" / "no", as one verdict."""
    if not outcomes:
        return "not comparable"
    if all(o == "yes" for o in outcomes):
        return "holds"
    if all(o == "no" for o in outcomes):
        return "does not hold here"
    return "holds partly"


# -- 1: prefork is faster with one request at a time ----------------------------------------------
def _rule_prefork_single(run: StoredRun, store: RunStore) -> Finding:
    ok = _ok_runs(run)
    figures: dict[str, float | int | str | None] = {}
    outcomes: list[str] = []
    parts: list[str] = []
    for family in ("core", "apache"):
        pre = ok.get(f"{family}:prefork")
        threaded = {t: ok[t] for t in (f"{family}:worker", f"{family}:event") if t in ok}
        if not pre or not threaded:
            continue
        rps = {t: [_num(_pattern(r, "single").total, "rps") or 0.0 for r in rs]
               for t, rs in {f"{family}:prefork": pre, **threaded}.items()}
        p50 = {t: [_num(_pattern(r, "single").total, "latency_ms", "p50") or 0.0 for r in rs]
               for t, rs in {f"{family}:prefork": pre, **threaded}.items()}
        for t in rps:
            figures[f"{t} req/s"] = round(_median(rps[t]), 1)
            figures[f"{t} req/s spread"] = round(_spread(rps[t]), 1)
            figures[f"{t} p50 ms"] = round(_median(p50[t]), 3)
        pre_name = f"{family}:prefork"
        best = max(threaded, key=lambda t: _median(rps[t]))
        spread = max(_spread(rps[pre_name]), _spread(rps[best]))
        o = _compare(_median(rps[pre_name]), _median(rps[best]), spread, lower_is_better=False)
        outcomes.append(o)
        parts.append(f"{pre_name} {_median(rps[pre_name]):.0f} req/s (p50 {_median(p50[pre_name]):.2f} ms) vs "
                     f"{best} {_median(rps[best]):.0f} req/s (p50 {_median(p50[best]):.2f} ms), spread "
                     f"{spread:.0f} req/s" + {"yes": "", "within": ": within the spread",
                                              "no": ": prefork slower"}[o])
    if not outcomes:
        return Finding("not run", "no family ran both prefork and a threaded MPM: " + _why_skipped(run), figures)
    return Finding(_combine(outcomes), "; ".join(parts) + ".", figures)


def _why_skipped(run: StoredRun) -> str:
    sk = _skipped(run)
    return "; ".join(f"{t}: {m}" for t, m in sk.items()) or "no target completed"


# -- 2: prefork queues requests beyond its processes ----------------------------------------------
def _rule_prefork_queue(run: StoredRun, store: RunStore) -> Finding:
    ok = _ok_runs(run)
    rs = ok.get("core:prefork") or ok.get("apache:prefork")
    if not rs:
        return Finding("not run", "prefork did not run: " + _why_skipped(run), {})
    name = rs[0].target
    p = _pattern(rs[0], "queue")
    work_ms = _work_ms(p)
    slots = _slots(rs[0])
    p50s = [_num(_pattern(r, "queue").total, "latency_ms", "p50") for r in rs]
    cor = [_num(_pattern(r, "queue").total, "corrected_latency_ms", "p50") for r in rs]
    busy = _peak(_peak(s.peak_busy for s in _stage_samples(store, r)) for r in rs)
    p50 = _median([v for v in p50s if v is not None]) if any(v is not None for v in p50s) else None
    cp50 = _median([v for v in cor if v is not None]) if any(v is not None for v in cor) else None
    clients = _declared_connections(p)
    figures: dict[str, float | int | str | None] = {
        "slots": slots, "peak busy": busy, "concurrent requests": clients, "server work ms": work_ms,
        "p50 ms": p50, "corrected p50 ms": cp50}
    full = slots is not None and busy is not None and busy >= slots
    queued = p50 is not None and work_ms > 0 and p50 >= QUEUE_FACTOR * work_ms
    verdict: Verdict = "holds" if full and queued else "holds partly" if full or queued else "does not hold here"
    why = (f"{name} with {slots} slots and {clients} concurrent requests of {work_ms:.0f} ms: peak busy {busy}, "
           f"median latency {_fmt_ms(p50)} ({(p50 or 0) / work_ms if work_ms else 0:.1f}x the work; "
           f"corrected for coordinated omission {_fmt_ms(cp50)}).")
    return Finding(verdict, why, figures)


def _work_ms(p: PatternResult) -> float:
    """The server's own work per request: the pattern's ``ms`` (io, cpu) or ``?ms=`` of its path."""
    if p.params.get("ms") is not None:
        return float(p.params["ms"])
    from urllib.parse import parse_qs, urlsplit
    q = parse_qs(urlsplit(str(p.params.get("path", ""))).query)
    try:
        return float(q.get("ms", ["0"])[0])
    except ValueError:
        return 0.0


# -- 3: prefork's RAM grows with its process count ------------------------------------------------
def _pss_per_slot(store: RunStore, rs: Sequence[TargetRun]) -> list[float]:
    out = []
    for r in rs:
        peak = _peak(s.pss_bytes for s in _stage_samples(store, r))
        slots = _slots(r)
        if peak is not None and slots:
            out.append(peak / slots)
    return out


def _rule_prefork_ram(run: StoredRun, store: RunStore) -> Finding:
    ok = _ok_runs(run)
    figures: dict[str, float | int | str | None] = {}
    outcomes: list[str] = []
    parts: list[str] = []
    for family in ("core", "apache"):
        per = {t: _pss_per_slot(store, ok[t]) for t in (f"{family}:prefork", f"{family}:worker", f"{family}:event")
               if t in ok}
        per = {t: v for t, v in per.items() if v}
        pre = f"{family}:prefork"
        threaded = [t for t in per if t != pre]
        if pre not in per or not threaded:
            continue
        for t, v in per.items():
            figures[f"{t} PSS per slot bytes"] = round(_median(v))
            figures[f"{t} PSS per slot spread"] = round(_spread(v))
        worst = max(threaded, key=lambda t: _median(per[t]))  # the threaded MPM closest to prefork
        spread = max(_spread(per[pre]), _spread(per[worst]))
        ratio = _median(per[pre]) / _median(per[worst]) if _median(per[worst]) else None
        figures[f"{family} prefork/threaded ratio"] = None if ratio is None else round(ratio, 2)
        if _median(per[pre]) - spread >= RAM_FACTOR * _median(per[worst]):
            o = "yes"
        elif _median(per[pre]) > _median(per[worst]) + spread:
            o = "within"  # more, but less than RAM_FACTOR
        elif abs(_median(per[pre]) - _median(per[worst])) <= spread:
            o = "within"
        else:
            o = "no"
        outcomes.append(o)
        parts.append(f"{pre} {_kib(_median(per[pre]))} PSS per slot vs {worst} {_kib(_median(per[worst]))}"
                     + (f" ({ratio:.1f}x)" if ratio else ""))
    if not outcomes:
        return Finding("not run", "no family ran prefork and a threaded MPM with PSS samples: "
                       + _why_skipped(run), figures)
    return Finding(_combine(outcomes), "; ".join(parts) + f" (holds from {RAM_FACTOR}x).", figures)


# -- 4, 5, 6: kept-alive connections and threads -------------------------------------------------
@dataclass(frozen=True, slots=True)
class _HoldFigures:
    target: str
    slots: int | None
    peak_k: int | None
    peak_parked: int | None
    starved: int
    probes: int
    stall_s: float = 0.0  # the longest time without a frame during the stages

    @property
    def share(self) -> float:
        return self.starved / self.probes if self.probes else 0.0


def _hold_figures(store: RunStore, rs: Sequence[TargetRun]) -> _HoldFigures:
    peak_k: int | None = None
    peak_parked: int | None = None
    starved = probes = 0
    stall = 0.0
    for r in rs:
        ss = _stage_samples(store, r)
        peak_k = _peak([peak_k, _peak_state(ss, "K")])
        peak_parked = _peak([peak_parked, _peak(s.parked for s in ss)])
        st, n = _starved(_pattern(r, "probe"))
        starved += st
        probes += n
        stall = max(stall, _frame_stall(store, r))
    return _HoldFigures(rs[0].target, _slots(rs[0]), peak_k, peak_parked, starved, probes, round(stall, 1))


def _frame_stall(store: RunStore, tr: TargetRun) -> float:
    """The longest gap between frames from the first stage on (to the last frame)."""
    begin = min((m.t for m in store.marks(tr.id) if m.kind == "stage"), default=0.0)
    ts = [t for t in store.frame_times(tr.id) if t >= begin]
    return max((b - a for a, b in itertools.pairwise(ts)), default=0.0)


def _holds_threads(h: _HoldFigures) -> bool:
    """Every slot in K at a peak, or the status page itself starved (a real Apache's)."""
    return (h.slots is not None and h.peak_k is not None and h.peak_k >= h.slots) or h.stall_s >= STATUS_STALL_S


def _hold_text(h: _HoldFigures) -> str:
    stalled = (f", its status page unanswered for {h.stall_s:.1f} s (no free thread)"
               if h.stall_s >= STATUS_STALL_S else "")
    return (f"{h.target}: K slots at peak {h.peak_k} of {h.slots}{stalled}, parked {h.peak_parked}, "
            f"{h.starved} of {h.probes} probe requests waited >= {STARVED_MS:.0f} ms or got no answer")


def _hold_dict(h: _HoldFigures) -> dict[str, float | int | str | None]:
    t = h.target
    return {f"{t} slots": h.slots, f"{t} peak K": h.peak_k, f"{t} peak parked": h.peak_parked,
            f"{t} probe starved": h.starved, f"{t} probe requests": h.probes, f"{t} status stall s": h.stall_s}


def _threaded_targets(run: StoredRun, mpm: str) -> dict[str, list[TargetRun]]:
    return {t: rs for t, rs in _ok_runs(run).items() if t.split("?")[0].endswith(f":{mpm}")}


def _rule_worker_holds(run: StoredRun, store: RunStore) -> Finding:
    ts = _threaded_targets(run, "worker")
    if not ts:
        return Finding("not run", "no worker target completed: " + _why_skipped(run), {})
    outcomes, parts, figures = [], [], {}
    for rs in ts.values():
        h = _hold_figures(store, rs)
        figures.update(_hold_dict(h))
        held, starved = _holds_threads(h), h.share >= STARVED_SHARE_HOLDS
        outcomes.append("yes" if held and starved else "no" if not held and not starved else "within")
        parts.append(_hold_text(h))
    return Finding(_combine(outcomes), "; ".join(parts) + ".", figures)


def _frees(h: _HoldFigures) -> str:
    """"yes": event kept no thread in K and the probe was served promptly; "no": threads held and
    the probe starved; "within": one of the two."""
    free = h.peak_k == 0 and h.stall_s < STATUS_STALL_S
    prompt = h.share <= STARVED_SHARE_PROMPT
    return "yes" if free and prompt else "no" if not free and not prompt else "within"


def _rule_event_frees(run: StoredRun, store: RunStore) -> Finding:
    ts = _threaded_targets(run, "event")
    if not ts:
        return Finding("not run", "no event target completed: " + _why_skipped(run), {})
    outcomes, parts, figures = [], [], {}
    for rs in ts.values():
        h = _hold_figures(store, rs)
        figures.update(_hold_dict(h))
        outcomes.append(_frees(h))
        parts.append(_hold_text(h))
    return Finding(_combine(outcomes), "; ".join(parts) + ".", figures)


def _rule_tls_event(run: StoredRun, store: RunStore) -> Finding:
    ok = _ok_runs(run)
    old = [t for t in ok if "tls_mode=pre-2.4.7" in t]
    new = [t for t in ok if t.split("?")[0].endswith(":event") and t not in old]
    if not old or not new:
        return Finding("not run", "both TLS modes must run (core:event and core:event?tls_mode=pre-2.4.7): "
                       + _why_skipped(run), {})
    figures: dict[str, float | int | str | None] = {}
    outcomes, parts = [], []
    for t in old:  # before 2.4.7: like worker (threads held, the probe starved)
        h = _hold_figures(store, ok[t])
        figures.update(_hold_dict(h))
        held, starved = _holds_threads(h), h.share >= STARVED_SHARE_HOLDS
        outcomes.append("yes" if held and starved else "no" if not held and not starved else "within")
        parts.append("before 2.4.7, " + _hold_text(h))
    for t in new:  # today: like plain connections (parked, the probe served)
        h = _hold_figures(store, ok[t])
        figures.update(_hold_dict(h))
        outcomes.append(_frees(h))
        parts.append("today, " + _hold_text(h))
    return Finding(_combine(outcomes), "; ".join(parts) + ".", figures)


# -- 7: the concurrency each model needs ---------------------------------------------------------
#: the plan's stages, the pattern each runs, and whether a model that frees threads between requests
#: (event) should need fewer slots than connections for it
_CONCURRENCY_STAGES = {"slowloris": False, "ajax": True, "browsers": True}


def _settled(samples: list[SecondSample]) -> list[SecondSample]:
    """A stage's seconds without its first: that one still shows the previous stage's connections
    going away (the slowloris stage's 24 R slots were once the AJAX stage's peak under event)."""
    return samples[1:] if len(samples) > 1 else samples


def _declared_connections(p: PatternResult) -> int:
    from mpmcore.traffic.catalogue import declared_connections, validate_params
    try:
        params = validate_params(p.pattern, {k: v for k, v in p.params.items() if k != "target"} | {
            "target": "http://127.0.0.1/"})
    except ValueError:
        return int(p.total.get("connections_opened", 0))
    return declared_connections(p.pattern, params)


def _rule_concurrency(run: StoredRun, store: RunStore) -> Finding:
    ok = _ok_runs(run)
    if not ok:
        return Finding("not run", "no target completed: " + _why_skipped(run), {})
    figures: dict[str, float | int | str | None] = {}
    outcomes: list[str] = []
    lines: list[str] = []
    for target, rs in ok.items():
        base = target.split("?")[0]
        mpm = base.split(":")[1] if ":" in base else ""
        if mpm not in ("prefork", "worker", "event"):
            continue
        slots = _slots(rs[0])
        cells = []
        for stage, event_frees in _CONCURRENCY_STAGES.items():
            p = next((q for q in rs[0].patterns if q.stage == stage), None)
            if p is None:
                continue
            conns = _declared_connections(p)
            busy = _peak(_peak(s.peak_busy for s in _settled(_stage_samples(store, r, stage))) for r in rs)
            k = _peak(_peak_state(_settled(_stage_samples(store, r, stage)), "K") for r in rs)
            figures[f"{target} {stage} connections"] = conns
            figures[f"{target} {stage} peak busy"] = busy
            figures[f"{target} {stage} peak K"] = k
            if stage == "slowloris":  # the server cutting slow connections (RequestReadTimeout)
                figures[f"{target} slowloris reconnects"] = sum(
                    int(next((q.total.get("reconnects", 0) for q in r.patterns if q.stage == stage), 0)) for r in rs)
            cells.append(f"{stage} {busy}/{conns}")
            if busy is None or slots is None:
                continue
            need = min(conns, slots)
            holds_all = busy >= HOLDS_SLOTS_SHARE * need
            frees = busy < FREES_SLOTS_SHARE * conns
            expect_free = event_frees and mpm == "event"
            outcomes.append("yes" if (frees if expect_free else holds_all) else "no")
        lines.append(f"{target} (slots {slots}): " + ", ".join(cells))
    if not outcomes:
        return Finding("not comparable", "no MPM target reported busy slots: " + "; ".join(lines), figures)
    # with RequestReadTimeout the server cuts the slowloris connections (the pattern reconnects);
    # without it, it holds them for as long as they trickle
    cuts = []
    for target in ok:
        off = f"{target}?request_read_timeout=off"
        with_rrt, without = (figures.get(f"{t} slowloris reconnects") for t in (target, off))
        if "?" in target or not isinstance(with_rrt, int) or not isinstance(without, int):
            continue
        outcomes.append("yes" if with_rrt > 0 and without == 0 else "no")
        cuts.append(f"{target} {with_rrt} with, {without} without")
    note = ("; slowloris connections cut by RequestReadTimeout: " + ", ".join(cuts) if cuts
            else " (without-RequestReadTimeout targets did not run)")
    return Finding(_combine(outcomes), "peak busy slots / connections per stage: " + "; ".join(lines) + note + ".",
                   figures)


# -- 8: a thread-unsafe module under threads -----------------------------------------------------
def _fcgi_pool(tr: TargetRun) -> int:
    """The target's UnsafeFastCGIPool (its effective config, else its name's option)."""
    v = tr.config.settings.get("UnsafeFastCGIPool") if tr.config is not None else None
    if v is None and "?" in tr.target:
        opts = dict(o.partition("=")[::2] for o in tr.target.split("?", 1)[1].split("&"))
        v = next((x for k, x in opts.items() if k.lower() in ("unsafefastcgipool", "fcgi_pool")), None)
    return int(v) if v is not None and v.isdigit() else 0


def _rule_unsafe(run: StoredRun, store: RunStore) -> Finding:
    ok = _ok_runs(run)
    figures: dict[str, float | int | str | None] = {}
    counts: dict[str, tuple[int, int]] = {}
    for t, rs in ok.items():
        bad = sum(int(_pattern(r, "unsafe").total.get("corrupted", 0)) for r in rs)
        n = sum(int(_pattern(r, "unsafe").total.get("responses", 0)) for r in rs)
        counts[t] = (bad, n)
        figures[f"{t} mixed-up"] = bad
        figures[f"{t} answers"] = n
    prefork = [t for t in counts if t.split("?")[0].endswith(":prefork")]
    pooled = [t for t in counts if _fcgi_pool(ok[t][0]) > 0]
    threaded = [t for t in counts if t not in prefork and t not in pooled]
    if not prefork or not threaded or not pooled:
        return Finding("not run", "prefork, worker and worker with the FastCGI pool must all run: " + _why_skipped(run),
                       figures)
    if any(counts[t][1] == 0 for t in counts):
        return Finding("not run", "a target answered no /unsafe request: "
                       + ", ".join(f"{t} {n}" for t, (_b, n) in counts.items()), figures)
    outcomes = [("yes" if counts[t][0] == 0 else "no") for t in prefork + pooled]
    outcomes += [("yes" if counts[t][0] > 0 else "no") for t in threaded]
    why = ", ".join(f"{t}: {b} of {n} answers mixed up" for t, (b, n) in counts.items())
    return Finding(_combine(outcomes), why + ".", figures)


# -- 9: nginx and lighttpd lighter than Apache ---------------------------------------------------
def _idle_figures(store: RunStore, rs: Sequence[TargetRun]) -> tuple[list[float], list[float]]:
    """Per round: PSS per idle connection (PSS in the idle stage minus the baseline's, per
    connection the generator held), and responses/s of the pattern beside the idle connections."""
    per_conn, rps = [], []
    for r in rs:
        base = [s.pss_bytes for s in _stage_samples(store, r, "baseline") if s.pss_bytes is not None]
        idle = _stage_samples(store, r, "idle")
        idle_pss = [s.pss_bytes for s in idle if s.pss_bytes is not None]
        # the idle pattern's own connections where the samples have them, else the generator's
        conns = _peak(s.patterns["idle-conns"].connections if "idle-conns" in s.patterns
                      else s.client_connections for s in idle)
        if base and idle_pss and conns:
            per_conn.append(max(0.0, (max(idle_pss) - _median(base)) / conns))
        v = _num(_pattern(r, "beside-idle").total, "rps")
        if v is not None:
            rps.append(v)
    return per_conn, rps


def _rule_light_servers(run: StoredRun, store: RunStore) -> Finding:
    ok = _ok_runs(run)
    apache = next((t for t in ok if t.startswith("apache:")), None)
    peers = [t for t in ok if t in ("nginx", "lighttpd")]
    if apache is None or not peers:
        return Finding("not run", "apache and nginx or lighttpd must run: " + _why_skipped(run), {})
    figs = {t: _idle_figures(store, ok[t]) for t in [apache, *peers]}
    figures: dict[str, float | int | str | None] = {}
    for t, (mem, rps) in figs.items():
        figures[f"{t} PSS per idle connection bytes"] = round(_median(mem)) if mem else None
        figures[f"{t} req/s beside idle"] = round(_median(rps), 1) if rps else None
    outcomes, parts = [], []
    a_mem, a_rps = figs[apache]
    for t in peers:
        mem, rps = figs[t]
        if mem and a_mem:
            outcomes.append(_compare(_median(mem), _median(a_mem), max(_spread(mem), _spread(a_mem)), True))
        if rps and a_rps:
            outcomes.append(_compare(_median(rps), _median(a_rps), max(_spread(rps), _spread(a_rps)), False))
        parts.append(f"{t} {_kib(_median(mem)) if mem else 'n/a'} per idle connection, "
                     f"{_median(rps) if rps else 0:.0f} req/s beside them")
    parts.insert(0, f"{apache} {_kib(_median(a_mem)) if a_mem else 'n/a'} per idle connection, "
                    f"{_median(a_rps) if a_rps else 0:.0f} req/s beside them")
    sk = _skipped(run)
    missing = "".join(f"; {t} not run: {m}" for t, m in sk.items() if t in ("nginx", "lighttpd"))
    return Finding(_combine(outcomes), "; ".join(parts) + missing + ".", figures)


# -- the registry ------------------------------------------------------------------------------
def _claim(key: str, number: int, title: str, sentence: str, conditions: str, rule: Rule) -> Claim:
    return Claim(key, number, title, sentence, f"claim-{key}", conditions, rule)


CLAIMS: dict[str, Claim] = {c.key: c for c in (
    _claim("prefork-faster-single", 1, "prefork is fastest one request at a time",
           "prefork is faster than the threaded MPMs when there is only one request at a time.",
           "one client, one keep-alive connection, GET / (static); the core's and a real Apache's "
           "three MPMs at the same slots; medians over rounds", _rule_prefork_single),
    _claim("prefork-queues", 2, "prefork queues requests beyond its processes",
           "under prefork, concurrent requests beyond the free processes wait in line.",
           "core:prefork with 4 slots, 12 clients, a new connection per request to /sleep?ms=200", _rule_prefork_queue),
    _claim("prefork-ram", 3, "prefork's RAM grows with its process count",
           "prefork's RAM grows with its process count.",
           "every slot held by a kept-alive client (32 slots, 2 processes for worker/event); PSS of the "
           "whole process tree per slot; the core's and a real Apache's three MPMs", _rule_prefork_ram),
    _claim("worker-keepalive-holds-threads", 4, "worker: a kept-alive connection holds a thread",
           "under worker, a kept-alive connection holds a thread until it closes: idle browsers starve new clients.",
           "16 slots (2 x 8 threads), KeepAliveTimeout 5 s, 4 browsers with 4 keep-alive connections "
           "each (16) idling 3 s between page views, and 2 probe clients opening a new connection per "
           "request to / (2 s timeout)", _rule_worker_holds),
    _claim("event-frees-threads", 5, "event frees the thread after each request",
           "event frees the thread after each request: the same clients do not starve it.",
           "the same traffic and slots as claim 4, under event", _rule_event_frees),
    _claim("tls-event", 6, "TLS under event: like worker before 2.4.7, like plain today",
           "TLS under event: before 2.4.7 it behaves like worker, today like plain connections.",
           "claim 4's traffic over https to the core's event MPM, with SSLSyncEventMPM On (before "
           "2.4.7) and Off (today)", _rule_tls_event),
    _claim("concurrency-per-model", 7, "the concurrency each model needs",
           "slowloris, AJAX polling and browsers with 6 keep-alive connections: the concurrency each "
           "model needs, with and without RequestReadTimeout.",
           "the core's three MPMs at 48 slots; stages of slowloris (24 connections), AJAX polling (24 "
           "clients) and browsers (4 x 6 connections); peak busy slots per stage", _rule_concurrency),
    _claim("unsafe-module-threads", 8, "a thread-unsafe module breaks under threads; FastCGI fixes it",
           "a thread-unsafe module (mod_php) breaks under threads; a FastCGI pool (php-fpm) fixes it.",
           "8 concurrent clients on /unsafe?ms=20 under prefork, worker, and worker with "
           "UnsafeFastCGIPool 4; answers carrying another request's state counted", _rule_unsafe),
    _claim("light-servers", 9, "nginx and lighttpd are lighter than Apache",
           "nginx and lighttpd use fewer resources and scale further than Apache.",
           "apache:event, nginx and lighttpd at 256 slots/connections; 200 idle keep-alive connections "
           "beside 8 clients on GET /; PSS per idle connection and req/s beside them", _rule_light_servers),
)}


# -- reading verdicts ------------------------------------------------------------------------
def claim_of(run: StoredRun) -> Claim | None:
    """The claim whose plan this run ran, or None."""
    for c in CLAIMS.values():
        if c.plan == run.meta.name:
            return c
    return None


def verdict_for(run: StoredRun, store: RunStore) -> list[ClaimResult]:
    """The verdicts a run gives: its plan's claim (a run of a plan that measures none: [])."""
    c = claim_of(run)
    return [] if c is None else [c.judge(run, store)]


def latest_results(store: RunStore | None) -> list[ClaimResult]:
    """Every claim in the essay's order, judged on the newest complete run of its plan (no store:
    every claim "not run")."""
    latest = store.latest_claim_runs() if store is not None else {}
    out = []
    for c in CLAIMS.values():
        run_id = latest.get(c.plan)
        out.append(c.judge(None if run_id is None or store is None else store.load(run_id), store))
    return out


# -- CLI ---------------------------------------------------------------------------------------
def format_results(results: Sequence[ClaimResult]) -> str:
    lines = []
    for r in results:
        run = f"run {r.run_id}" if r.run_id is not None else "no run"
        lines.append(f"{r.number}. {r.title}: {r.verdict.upper()} ({run})")
        lines.append(f"   {r.why}")
    return "\n".join(lines)


def add_claims_commands(sub: Any) -> None:
    """``mpmlab experiment claims [--run-all] [--runs-db PATH] [--json]`` on the ``experiment``
    subcommand's subparsers ``sub`` (mpmcore/experiments/cli.py calls it)."""
    p = sub.add_parser("claims", help="the essay's claims: their last verdicts, or run them all first",
                       description="Print each claim's verdict, read from the newest complete run of its "
                                   "plan in the run store; --run-all runs the nine claim plans first.")
    p.add_argument("--run-all", action="store_true", help="run every claim's plan first (about 10 minutes)")
    p.add_argument("--runs-db", metavar="PATH", help="the run store (default: the user's data directory)")
    p.add_argument("--json", action="store_true", help="the verdicts as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(experiment_func=cmd_claims)


def cmd_claims(args: argparse.Namespace) -> int:
    import json
    import signal
    import threading
    from pathlib import Path

    from mpmcore.model import to_jsonable

    db = Path(args.runs_db) if args.runs_db else default_path()
    if not args.run_all and not db.exists():  # nothing run yet: say so, create nothing
        results = latest_results(None)
        print(json.dumps(to_jsonable(results), indent=2) if args.json else format_results(results))
        return 0
    try:
        if args.run_all:
            db.parent.mkdir(parents=True, exist_ok=True)
        store = RunStore(db)
    except (StoreError, OSError) as e:
        print(f"mpmlab experiment claims: --runs-db {db}: {e}", file=sys.stderr)
        return 2
    code = 0
    try:
        if args.run_all:
            stop = threading.Event()

            def on_sigint(signum: int, frame: Any) -> None:
                stop.set()
                print("\nmpmlab experiment claims: stopping (everything started is stopped by pid)...",
                      file=sys.stderr)

            old = signal.signal(signal.SIGINT, on_sigint)
            try:
                code = run_all(store, progress=None if args.quiet else sys.stderr, stop=stop)
            finally:
                signal.signal(signal.SIGINT, old)
        results = latest_results(store)
    finally:
        store.close()
    print(json.dumps(to_jsonable(results), indent=2) if args.json else format_results(results))
    return code


def run_all(store: RunStore, progress: TextIO | None = None, stop: threading.Event | None = None) -> int:
    """Run every claim's built-in plan into ``store``, one after another; 0, or 130 when ``stop``
    was set (the plan running then ends "stopped", the others do not start)."""
    from mpmcore.experiments.plan import find_plan  # (the runner is heavy: only when running)
    from mpmcore.experiments.runner import run_experiment

    stop = stop or threading.Event()
    started = time.monotonic()
    for c in CLAIMS.values():
        if stop.is_set():
            return 130
        pl = find_plan(c.plan)
        if progress is not None:
            print(f"[{time.monotonic() - started:5.0f}s] claim {c.number}/9 {c.title}: {c.plan} on "
                  f"{', '.join(t.name for t in pl.targets)}", file=progress, flush=True)
        run = run_experiment(pl, store=store, stop=stop)
        if progress is not None:
            for r in verdict_for(run, store):
                print(f"        {r.verdict}: {r.why}", file=progress, flush=True)
    if progress is not None:
        print(f"[{time.monotonic() - started:5.0f}s] all claims run", file=progress, flush=True)
    return 130 if stop.is_set() else 0
