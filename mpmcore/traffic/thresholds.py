"""Pass/fail thresholds on a finished run: ``mpmlab traffic ... --fail-on 'p99>200ms,errors>1%'``.

The form follows what k6 and Locust users write: a comma-separated list of ``METRIC OP VALUE``
conditions, each naming what makes the run **fail**. ``mpmlab traffic`` prints every condition
with its measured value and exits with ``EXIT_THRESHOLDS`` (99, k6's code for failed thresholds)
when one holds.

Metrics (latency values accept ``ms``, ``s`` or ``us``; a bare number is milliseconds):

- ``p50 p90 p99 p99.9 max mean``: request latency (request written to response complete);
- ``corrected_p50`` ... ``corrected_max``: the open model's latency from the intended send time
  (only patterns with a rate have it; a condition on it fails when the run has none);
- ``ttfb_p50`` ... ``ttfb_max``: time to first byte;
- ``errors``, ``5xx``, ``4xx``, ``non_2xx``: a count, or with ``%`` a share of the requests sent
  (errors) or of the responses (status classes);
- ``rps``: responses per second over the run (write ``rps<100`` to fail a run slower than that);
- ``responses``: how many responses arrived;
- ``corrupted``: answers of /unsafe carrying another request's state (``X-Unsafe-Corrupted: 1``), a
  count or a share of the responses (``corrupted>0`` fails a thread-unsafe module's run).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from mpmcore.traffic.runstats import Figures, LatencySummary, RunInfo

__all__ = ["EXIT_THRESHOLDS", "Outcome", "Threshold", "ThresholdError", "check_all", "parse_thresholds"]

#: The exit status of ``mpmlab traffic`` when a threshold failed (k6 uses the same code).
EXIT_THRESHOLDS = 99

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_LATENCY_KEYS = {"p50": "p50", "p90": "p90", "p99": "p99", "p99.9": "p99_9", "max": "max", "mean": "mean"}
_LATENCY_SOURCES = {"": "latency_ms", "corrected_": "corrected_latency_ms", "ttfb_": "ttfb_ms"}
_COUNT_METRICS = ("errors", "5xx", "4xx", "non_2xx", "responses", "corrupted")
_UNIT_MS = {"ms": 1.0, "s": 1000.0, "us": 0.001, "": 1.0}
_CONDITION = re.compile(r"^\s*([a-z0-9_.]+)\s*(>=|<=|>|<)\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|us|s|%)?\s*$")


class ThresholdError(ValueError):
    """A --fail-on text that is not a list of conditions this module knows."""


class Kind(StrEnum):
    LATENCY = "latency"  # milliseconds
    COUNT = "count"
    SHARE = "share"  # percent
    RATE = "rate"  # responses/s


@dataclass(frozen=True, slots=True)
class Threshold:
    """One condition that fails the run when it holds, e.g. ``p99 > 200 ms``."""

    text: str  # as the user wrote it, trimmed
    metric: str
    op: str
    value: float  # in the metric's unit: ms for latencies, percent for shares
    kind: Kind

    def measure(self, total: Figures) -> float | None:
        """The run's value of this metric in the threshold's unit, or None when the run has none."""
        if self.kind is Kind.LATENCY:
            prefix = next(p for p in ("corrected_", "ttfb_", "") if self.metric.startswith(p))
            summary: LatencySummary | None = getattr(total, _LATENCY_SOURCES[prefix])
            if summary is None or summary.count == 0:
                return None
            return float(getattr(summary, _LATENCY_KEYS[self.metric[len(prefix):]]))
        if self.kind is Kind.RATE:
            return total.rps
        count, base = _count(self.metric, total)
        if self.kind is Kind.COUNT:
            return float(count)
        return 100.0 * count / base if base else 0.0

    def failed(self, measured: float | None) -> bool:
        # A latency condition with nothing measured cannot be shown to pass: it fails.
        return True if measured is None else _OPS[self.op](measured, self.value)


@dataclass(frozen=True, slots=True)
class Outcome:
    threshold: Threshold
    measured: float | None
    failed: bool

    def line(self) -> str:
        unit = {Kind.LATENCY: "ms", Kind.SHARE: "%", Kind.COUNT: "", Kind.RATE: " resp/s"}[self.threshold.kind]
        got = "not measured" if self.measured is None else f"{self.measured:.6g}{unit}"
        return f"{'FAIL' if self.failed else 'ok':<4}  {self.threshold.text:<24} measured {got}"


def _count(metric: str, t: Figures) -> tuple[int, int]:
    """(count, what a percentage is of) for a count metric."""
    if metric == "errors":
        return t.errors_total, t.requests
    if metric == "responses":
        return t.responses, t.responses
    if metric == "non_2xx":
        return t.responses - t.status.get("2xx", 0), t.responses
    if metric == "corrupted":
        return t.corrupted, t.responses
    return t.status.get(metric, 0), t.responses


def _kind(metric: str, unit: str) -> Kind:
    for prefix in _LATENCY_SOURCES:
        rest = metric[len(prefix):] if metric.startswith(prefix) else None
        if rest in _LATENCY_KEYS and (prefix or metric in _LATENCY_KEYS):
            if unit == "%":
                raise ThresholdError(f"{metric}: a latency takes ms, s or us, not %")
            return Kind.LATENCY
    if metric == "rps":
        if unit:
            raise ThresholdError("rps: takes a bare number of responses per second")
        return Kind.RATE
    if metric in _COUNT_METRICS:
        if unit not in ("", "%"):
            raise ThresholdError(f"{metric}: takes a count or a percentage, not {unit}")
        if metric == "responses" and unit == "%":
            raise ThresholdError("responses: takes a count")
        return Kind.SHARE if unit == "%" else Kind.COUNT
    known = [*_LATENCY_KEYS, *(p + k for p in ("corrected_", "ttfb_") for k in _LATENCY_KEYS),
             *_COUNT_METRICS, "rps"]
    raise ThresholdError(f"unknown metric {metric!r} (one of: {', '.join(known)})")


def parse_thresholds(text: str) -> list[Threshold]:
    """``'p99>200ms, errors>1%'`` -> thresholds; a clear ThresholdError for anything else."""
    out: list[Threshold] = []
    for part in text.split(","):
        if not part.strip():
            continue
        m = _CONDITION.match(part.lower())
        if m is None:
            raise ThresholdError(f"{part.strip()!r}: expected METRIC OP VALUE, e.g. p99>200ms or errors>1%")
        metric, op, number, unit = m.group(1), m.group(2), float(m.group(3)), m.group(4) or ""
        kind = _kind(metric, unit)
        value = number * _UNIT_MS[unit] if kind is Kind.LATENCY else number
        out.append(Threshold(part.strip(), metric, op, value, kind))
    if not out:
        raise ThresholdError("no condition given")
    return out


def check_all(thresholds: list[Threshold], run: RunInfo) -> list[Outcome]:
    """Every threshold against a finished run's totals."""
    if run.total is None:
        raise ValueError(f"{run.id}: the run has no totals to check")
    out = []
    for t in thresholds:
        measured = t.measure(run.total)
        out.append(Outcome(t, measured, t.failed(measured)))
    return out
