"""mpmcore.traffic: the traffic generator.

An asyncio (uvloop) client in its own process, one coroutine per simulated client, patterns as
small scenario functions, HDR latency histograms, live control over a Unix socket.

- ``PATTERNS`` / ``catalogue_json()``: the pattern catalogue as data (for forms).
- ``validate_params()``: the parameter check used everywhere.
- ``TrafficRunner`` / ``TrafficClient`` (control.py): the control API for other processes.
- limits.py: the hard caps (MAX_CONNECTIONS, MAX_RATE, MAX_TOTAL_REQUESTS, MAX_DURATION, ...).
"""

from .catalogue import PATTERNS, ParamSpec, catalogue_json, parse_duration, parse_size, validate_params
from .control import TrafficClient, TrafficError, TrafficRunner
from .limits import (FRAME_INTERVAL, MAX_CONNECTIONS, MAX_DURATION, MAX_PATTERNS, MAX_RATE,
                     MAX_TOTAL_REQUESTS)
from .target import Target, TargetError, resolve_target, resolve_target_sync

__all__ = [
    "PATTERNS", "ParamSpec", "catalogue_json", "parse_duration", "parse_size", "validate_params",
    "TrafficClient", "TrafficError", "TrafficRunner", "Target", "TargetError", "resolve_target",
    "resolve_target_sync", "FRAME_INTERVAL", "MAX_CONNECTIONS", "MAX_DURATION", "MAX_PATTERNS",
    "MAX_RATE", "MAX_TOTAL_REQUESTS",
]
