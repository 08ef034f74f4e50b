"""The wire formats of /server-status (``?auto``, the HTML page with and without ``notable`` and
``refresh``, ``?json``) rendered from fixed synthetic scoreboards and compared byte for byte with
the output captured from the code before the typed model (tests/unit/data/status_golden/).

Regenerate (only when a format change is intended): ``python tests/unit/test_status_golden.py``."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from status_scenarios import LOAD, NOW, SCENARIOS, Scenario

from mpmcore.status import modstatus as status

DATA = Path(__file__).parent / "data" / "status_golden"


def _info(sc: Scenario) -> status.ServerInfo:
    return status.ServerInfo(server_name="127.0.0.1", server_version="mpmlab/0.1.0 (Unix)",
                             built="Nov 26 2026 10:00:00", mpm=sc.mpm, max_request_workers=sc.max_request_workers,
                             threads_per_child=sc.threads_per_child, server_limit=sc.server_limit,
                             extended_status=sc.extended_status, local_ip="127.0.0.2")


def renders(sc: Scenario) -> Iterator[tuple[str, bytes]]:
    info = _info(sc)
    yield "auto.txt", status.render_auto(sc.snap, info, NOW).encode("latin-1", "replace")
    yield "html", status.render_html(sc.snap, info, NOW).encode("latin-1", "xmlcharrefreplace")
    yield "notable.html", status.render_html(sc.snap, info, NOW, notable=True).encode("latin-1", "xmlcharrefreplace")
    yield "refresh.html", status.render_html(sc.snap, info, NOW, refresh=5).encode("latin-1", "xmlcharrefreplace")
    yield "json", json.dumps(status.render_json(sc.snap, info, NOW), separators=(",", ":")).encode()


@pytest.fixture
def fixed_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.setattr(os, "getloadavg", lambda: LOAD)
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("make", SCENARIOS, ids=[m.__name__ for m in SCENARIOS])
def test_rendering_is_byte_identical(make, fixed_env) -> None:
    sc = make()
    for suffix, body in renders(sc):
        want = (DATA / f"{sc.name}.{suffix}").read_bytes()
        assert body == want, f"{sc.name}.{suffix} differs from the golden"


if __name__ == "__main__":
    os.environ["TZ"] = "UTC"
    time.tzset()
    os.getloadavg = lambda: LOAD
    DATA.mkdir(parents=True, exist_ok=True)
    for make in SCENARIOS:
        sc = make()
        for suffix, body in renders(sc):
            (DATA / f"{sc.name}.{suffix}").write_bytes(body)
            print(f"{sc.name}.{suffix}: {len(body)} bytes")
