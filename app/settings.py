"""The dashboard's configuration: what ``mpmlab dashboard`` was started with, as one object that
the app factory receives and routes get through dependency injection (no module globals)."""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from mpmcore.sources.attach import make_source

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"

#: Scoreboard frames per second sent to browsers (10-20 looks live; more costs the sampler, not the eye).
GRID_HZ = 20
#: Summary messages per second (process table, totals, "what is happening").
SUMMARY_HZ = 4
#: Seconds of chart history kept (one point per second).
HISTORY_SECONDS = 600
#: Error-log lines kept for new pages.
LOG_LINES = 300
#: Error-log lines a page shows when it is rendered, and gets again when its websocket (re)connects.
LOG_BACKLOG = 200
#: Seconds between polls of an attached server (--attach-interval).
ATTACH_INTERVAL = 1.0


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost": addresses only this machine can reach."""
    h = host.strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


#: The embedded core's name as a source (/api/sources, /metrics' source label).
CORE_SOURCE = "core"


@dataclass
class DashboardSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    mpm: str = "event"
    core_listen: str = "127.0.0.1:8080"
    core_settings: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    start_core: bool = True  # False: watch an `mpmlab serve` already running on core_listen (or none, below)
    start_traffic: bool = True
    grid_hz: float = GRID_HZ
    summary_hz: float = SUMMARY_HZ
    history_seconds: int = HISTORY_SECONDS
    #: Real servers to watch (``--attach``: ``[NAME=][apache+|nginx+]URL[#threads_per_child=N]``).
    attach: list[str] = field(default_factory=list)
    attach_interval: float = ATTACH_INTERVAL
    allow_remote_attach: bool = False

    @property
    def watch_core(self) -> bool:
        """Whether there is an embedded core to show: started by us, or (``--no-core`` without
        ``--attach``) an ``mpmlab serve`` already running on core_listen. ``--no-core --attach``
        shows the attached servers only."""
        return self.start_core or not self.attach

    @property
    def loopback(self) -> bool:
        return is_loopback_host(self.host)

    def check(self) -> None:
        """Refuse an unsafe configuration before anything starts."""
        if not self.loopback and not self.token:
            raise ValueError(f"--host {self.host} is reachable from other machines: control actions need a "
                             "token there. Start with --token SECRET (or bind to 127.0.0.1).")
        if self.token is not None and len(self.token) < 8:
            raise ValueError("--token must be at least 8 characters")
        if not 0.1 <= self.attach_interval <= 60:
            raise ValueError(f"--attach-interval must be between 0.1 and 60 seconds, not {self.attach_interval:g}")
        names = set()
        for spec in self.attach:
            name = make_source(spec).name  # ValueError for a bad URL or #option
            if name in names or name == CORE_SOURCE:
                raise ValueError(f"--attach {spec}: the name {name!r} is taken; give each source its own "
                                 "(NAME=URL)")
            names.add(name)

    def token_ok(self, given: str | None) -> bool:
        if self.token is None:
            return True
        return given is not None and secrets.compare_digest(given.encode(), self.token.encode())

    @property
    def core_url(self) -> str:
        return f"http://{self.core_listen}/"
