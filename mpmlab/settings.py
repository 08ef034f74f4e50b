"""The dashboard's configuration: what ``mpmlab dashboard`` was started with, as one object that
the app factory receives and routes get through dependency injection (no module globals)."""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from mpmcore.sources.attach import make_source

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = Path(__file__).resolve().parent


def _assets(name: str) -> Path:
    """templates/ or static/: inside the package when installed from a wheel (setup.py copies them
    there), else the repository's top-level folder (a checkout, an editable install)."""
    inside = PACKAGE_DIR / name
    return inside if inside.is_dir() else ROOT / name


TEMPLATES_DIR = _assets("templates")
STATIC_DIR = _assets("static")

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


def new_token() -> str:
    """A random control token (256 bits, URL-safe), as Jupyter makes one at start."""
    return secrets.token_urlsafe(32)


#: The embedded core's name as a source (/api/sources, /metrics' source label).
CORE_SOURCE = "core"


@dataclass
class DashboardSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    mpm: str = "event"
    core_listen: str = "127.0.0.1:8080"
    core_settings: dict[str, str] = field(default_factory=dict)
    #: The control token: the user's (``--token``, ``MPMLAB_TOKEN``, ``token`` in the file), else a
    #: random one made here (``token_generated``); None only with ``no_token``. See docs/security.md.
    token: str | None = None
    #: ``--no-token`` / ``MPMLAB_NO_TOKEN=1`` / ``no_token = true``: control open to every local process.
    no_token: bool = False
    start_core: bool = True  # False: watch an `mpmlab serve` already running on core_listen (or none, below)
    start_traffic: bool = True
    grid_hz: float = GRID_HZ
    summary_hz: float = SUMMARY_HZ
    history_seconds: int = HISTORY_SECONDS
    #: Real servers to watch (``--attach``: ``[NAME=][apache+|nginx+|lighttpd+]URL[#threads_per_child=N]``).
    attach: list[str] = field(default_factory=list)
    attach_interval: float = ATTACH_INTERVAL
    allow_remote_attach: bool = False
    #: uvicorn's access log on stderr (``--access-log``); tokens in it are redacted (mpmlab.security).
    access_log: bool = False
    #: The run store (``--runs-db PATH``, SQLite; None: ``mpmcore.experiments.store.default_path()``):
    #: experiment runs and recorded live sessions (docs/dashboard.md#experiments).
    runs_db: str | None = None
    token_generated: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.token is None and not self.no_token:
            self.token = new_token()
            self.token_generated = True

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
        if self.no_token and self.token is not None and not self.token_generated:
            raise ValueError("--token and --no-token contradict each other: give one of them")
        if not self.loopback and (self.token is None or self.token_generated):
            raise ValueError(f"--host {self.host} is reachable from other machines: control actions need a "
                             "token you choose there (a random one would change at every start). Start with "
                             "--token SECRET or MPMLAB_TOKEN (or bind to 127.0.0.1).")
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
        """Whether ``given`` is the control token (always True when control is open, ``no_token``)."""
        if self.token is None:
            return True
        return given is not None and secrets.compare_digest(given.encode(), self.token.encode())

    @property
    def token_cookie(self) -> str:
        """The cookie the page's token link sets. Cookies are not kept apart by port, so two
        dashboards on one host would overwrite each other's cookie if it had one name."""
        return f"mpmlab_token_{self.port}"

    @property
    def core_url(self) -> str:
        return f"http://{self.core_listen}/"
