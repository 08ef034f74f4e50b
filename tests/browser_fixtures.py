"""The browser tests' Chromium and what its pages report as broken.

``browser``: Debian's /usr/bin/chromium driven by Playwright's sync API (never a downloaded browser),
one per test module; its pages are signed in to every running DashboardProcess
(dashboard_fixtures.launch_chromium). ``PageErrors`` collects the page errors and console errors of
the pages it watches, one line each, for the test to assert that none came but those it provoked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dashboard_fixtures import launch_chromium

#: The page's script is running and has drawn a live frame of the core's scoreboard.
LIVE = "window.mpmlab && window.mpmlab.frames > 0"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright import sync_api  # pinned in pyproject; the browser is Debian's

    with sync_api.sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


class PageErrors:
    """The page errors (``pageerror: ...``) and console messages of the types ``console``
    (``console.error: ...``) of every page given to ``watch``, in the order they came.
    Chromium logs every 4xx answer as a console error: a test that provokes one on purpose says
    so with ``expect(line)``, and ``unexpected()`` leaves that line out."""

    def __init__(self, console: tuple[str, ...] = ("error",)):
        self.console = console
        self.lines: list[str] = []
        self.expected: set[str] = set()

    def watch(self, pg: Any) -> Any:
        pg.on("pageerror", lambda e: self.lines.append(f"pageerror: {e}"))
        pg.on("console", lambda m: self.lines.append(f"console.{m.type}: {m.text}") if m.type in self.console else None)
        return pg

    def expect(self, line: str) -> None:
        self.expected.add(line)

    def unexpected(self) -> list[str]:
        return [line for line in self.lines if line not in self.expected]


def http_refusal(status: int, reason: str) -> str:
    """The console line Chromium logs for a resource answered with ``status``."""
    return f"console.error: Failed to load resource: the server responded with a status of {status} ({reason})"


__all__ = ["LIVE", "PageErrors", "browser", "http_refusal"]
