"""Fan-out of frames to websocket clients, where a slow client never slows anyone else.

Every client has a ``Channel``: one pending message per *kind* (the latest replaces an unsent one:
"latest frame wins"), plus a bounded list for kinds that must not be merged (log lines). The
producer (the sampler) only ever calls ``offer``/``append``, which never wait; each websocket has
its own sender task that takes what is pending when it is ready to send. A browser that cannot keep
up simply receives fewer frames; memory per client stays bounded.
"""

from __future__ import annotations

import asyncio
from typing import Any

#: Log lines kept for a client that is behind; older ones are dropped (and counted).
MAX_PENDING_LINES = 500


class Channel:
    def __init__(self) -> None:
        self._latest: dict[str, Any] = {}
        self._lines: dict[str, list[Any]] = {}
        self._event = asyncio.Event()
        self.dropped = 0  # frames replaced before they were sent
        self.sent = 0

    def offer(self, kind: str, message: Any) -> None:
        """Queue ``message`` as the one pending message of ``kind`` (size-1 queue, latest wins)."""
        if kind in self._latest:
            self.dropped += 1
        self._latest[kind] = message
        self._event.set()

    def append(self, kind: str, items: list[Any]) -> None:
        """Queue items that must be delivered in order (bounded: the oldest go first)."""
        buf = self._lines.setdefault(kind, [])
        buf.extend(items)
        if len(buf) > MAX_PENDING_LINES:
            self.dropped += len(buf) - MAX_PENDING_LINES
            del buf[: len(buf) - MAX_PENDING_LINES]
        self._event.set()

    async def take(self) -> tuple[dict[str, list[Any]], dict[str, Any]]:
        """Wait until something is pending; return (ordered items, latest messages) and clear."""
        while not (self._latest or self._lines):
            self._event.clear()
            await self._event.wait()
        lines, latest = self._lines, self._latest
        self._lines, self._latest = {}, {}
        self._event.clear()
        return lines, latest


class Hub:
    """The set of connected clients of one stream (e.g. /ws/scoreboard)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.channels: set[Channel] = set()
        self.published = 0

    def subscribe(self) -> Channel:
        ch = Channel()
        self.channels.add(ch)
        return ch

    def unsubscribe(self, ch: Channel) -> None:
        self.channels.discard(ch)

    def offer(self, kind: str, message: Any) -> None:
        self.published += 1
        for ch in self.channels:
            ch.offer(kind, message)

    def append(self, kind: str, items: list[Any]) -> None:
        if items:
            for ch in self.channels:
                ch.append(kind, items)

    def stats(self) -> dict[str, Any]:
        return {"clients": len(self.channels), "published": self.published,
                "dropped": sum(c.dropped for c in self.channels), "sent": sum(c.sent for c in self.channels)}
