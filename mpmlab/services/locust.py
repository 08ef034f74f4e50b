"""Locust masters as traffic sources: ``--attach [NAME=]locust+http://127.0.0.1:8089`` (also in
MPMLAB_ATTACH and the file's ``attach``). Each master's web UI is polled (``/stats/requests``, in a
worker thread, every ``attach_interval``) and its latest statistics are shown in the traffic panel
beside the dashboard's own patterns (``/ui/locust``) and served by ``GET /api/locust``. Loopback
only unless remote attach is allowed, as for every attached source."""

from __future__ import annotations

import asyncio
import logging

from mpmcore.model import LocustStats
from mpmcore.sources.locust import LocustMaster, locust_spec
from mpmlab.settings import DashboardSettings

log = logging.getLogger("mpmlab.locust")


def split_specs(specs: list[str]) -> tuple[list[str], list[tuple[str | None, str]]]:
    """``--attach`` values -> (status-page specs, Locust masters as (name, url))."""
    pages: list[str] = []
    masters: list[tuple[str | None, str]] = []
    for spec in specs:
        m = locust_spec(spec)
        if m is None:
            pages.append(spec)
        else:
            masters.append(m)
    return pages, masters


class LocustWatcher:
    """The Locust masters of one app: one poll task each, the latest statistics of each."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.interval = settings.attach_interval
        _, masters = split_specs(settings.attach)
        self.masters = [LocustMaster(url, name, allow_remote=settings.allow_remote_attach) for name, url in masters]
        self.latest: dict[str, LocustStats] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def stats(self) -> list[LocustStats]:
        """Every master's latest poll (a master not polled yet is left out)."""
        return [self.latest[m.name] for m in self.masters if m.name in self.latest]

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(m), name=f"locust-{m.name}") for m in self.masters]

    async def _loop(self, master: LocustMaster) -> None:
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        while True:
            self.latest[master.name] = await asyncio.to_thread(master.poll)  # never raises
            next_t = max(next_t + self.interval, loop.time())
            await asyncio.sleep(next_t - loop.time())

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
