"""mpmcore.traffic: the traffic generator.

An asyncio (uvloop) client in its own process, one coroutine per simulated client, patterns as
small scenario functions, HDR latency histograms, live control over a Unix socket.

- ``PATTERNS`` / ``catalogue_json()``: the pattern catalogue as data (for forms).
- ``validate_params()``: the parameter check used everywhere.
- ``TrafficRunner`` / ``TrafficClient`` (control.py): the control API for other processes.
- runstats.py: what the runner reports, typed (``StatsFrame``, ``RunInfo``, ``Figures``,
  ``LatencySummary``), each with the ``to_json()`` the control socket carries.
- limits.py: the hard caps (MAX_CONNECTIONS, MAX_RATE, MAX_TOTAL_REQUESTS, MAX_DURATION, ...).
"""

from mpmcore.traffic.catalogue import PATTERNS, ParamSpec, catalogue_json, parse_duration, parse_size, validate_params
from mpmcore.traffic.control import TrafficClient, TrafficError, TrafficRunner
from mpmcore.traffic.limits import (
    FRAME_INTERVAL,
    MAX_CONNECTIONS,
    MAX_DURATION,
    MAX_PATTERNS,
    MAX_RATE,
    MAX_TOTAL_REQUESTS,
)
from mpmcore.traffic.runstats import Figures, FrameTotals, LatencySummary, RunInfo, RunState, StatsFrame, StopReason
from mpmcore.traffic.target import Target, TargetError, resolve_target, resolve_target_sync

__all__ = [
    "FRAME_INTERVAL",
    "MAX_CONNECTIONS",
    "MAX_DURATION",
    "MAX_PATTERNS",
    "MAX_RATE",
    "MAX_TOTAL_REQUESTS",
    "PATTERNS",
    "Figures",
    "FrameTotals",
    "LatencySummary",
    "ParamSpec",
    "RunInfo",
    "RunState",
    "StatsFrame",
    "StopReason",
    "Target",
    "TargetError",
    "TrafficClient",
    "TrafficError",
    "TrafficRunner",
    "catalogue_json",
    "parse_duration",
    "parse_size",
    "resolve_target",
    "resolve_target_sync",
    "validate_params",
]
