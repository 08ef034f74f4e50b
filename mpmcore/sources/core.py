"""The embedded core as a source, read from its shared-memory scoreboard (as the dashboard's
sampler reads it), not from its /server-status page.

A status page is a request like any other: under worker or prefork it needs a free worker, which is
exactly what a server whose every thread is held by a kept-alive connection does not have. Polled
over HTTP, such a server shows nothing while it is starved (the poll waits in the listen queue),
and the recorder would keep the last frame from before. Read from the scoreboard, the frame shows
what the slots do at that moment, starved or not. A real Apache has no such way in: its
mod_status waits like any client (that is Apache's behaviour, and what the frames of a real
Apache show).
"""

from __future__ import annotations

import time

from mpmcore import scoreboard as sb
from mpmcore.content.server import server_info
from mpmcore.model import SourceFrame, SourceKind
from mpmcore.sources.attach import make_source
from mpmcore.sources.frames import Source, frame_from_summary
from mpmcore.status.summary import summarize

__all__ = ["CORE_SHM_PREFIX", "CoreSource", "open_source"]

#: a source spec ``mpmlab+shm:127.0.0.1:8080`` reads the core listening there from its scoreboard
CORE_SHM_PREFIX = "mpmlab+shm:"


class CoreSource:
    """Frames of the embedded core listening on ``listen``, from its scoreboard segment."""

    def __init__(self, listen: str, name: str | None = None, url: str = "") -> None:
        self.listen = listen
        self._name = name or listen
        self._url = url or f"http://{listen}/server-status"
        self._reader: sb.ScoreboardReader | None = None
        self._host = listen.rpartition(":")[0].strip("[]") or "localhost"

    @property
    def name(self) -> str:
        return self._name

    @property
    def url(self) -> str:
        return self._url

    @property
    def kind(self) -> SourceKind:
        return "mpmlab"

    def poll(self) -> SourceFrame:
        try:
            if self._reader is None:
                self._reader = sb.ScoreboardReader(sb.segment_name(self.listen))
            snap = self._reader.snapshot()
        except (FileNotFoundError, ValueError, sb.StaleScoreboard, OSError) as e:
            self.close()  # attach again at the next poll (the server restarted, or is not up yet)
            return frame_from_summary(self._name, None, url=self._url, error=f"no scoreboard for {self.listen}: {e}")
        return frame_from_summary(self._name, summarize(snap, server_info(snap, self._host), time.time()),
                                  url=self._url)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def open_source(spec: str, *, threads_per_child: int | None = None) -> Source:
    """``mpmlab+shm:LISTEN`` -> a CoreSource; anything else -> ``attach.make_source(spec)``."""
    if spec.startswith(CORE_SHM_PREFIX):
        return CoreSource(spec[len(CORE_SHM_PREFIX):])
    return make_source(spec, threads_per_child=threads_per_child)
