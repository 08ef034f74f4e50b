"""The dashboard's configuration: what ``mpmlab dashboard`` was started with, as one object that
the app factory receives and routes get through dependency injection (no module globals)."""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"

#: Scoreboard frames per second sent to browsers (the brief: 10-20).
GRID_HZ = 20
#: Summary messages per second (process table, totals, "what is happening").
SUMMARY_HZ = 4
#: Seconds of chart history kept (one point per second).
HISTORY_SECONDS = 600
#: Error-log lines kept for new pages.
LOG_LINES = 300


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost": addresses only this machine can reach."""
    h = host.strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


@dataclass
class DashboardSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    mpm: str = "event"
    core_listen: str = "127.0.0.1:8080"
    core_settings: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    start_core: bool = True  # False: attach to an `mpmlab serve` already running on core_listen
    start_traffic: bool = True
    grid_hz: float = GRID_HZ
    summary_hz: float = SUMMARY_HZ
    history_seconds: int = HISTORY_SECONDS

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

    def token_ok(self, given: str | None) -> bool:
        if self.token is None:
            return True
        return given is not None and secrets.compare_digest(given.encode(), self.token.encode())

    @property
    def core_url(self) -> str:
        return f"http://{self.core_listen}/"
