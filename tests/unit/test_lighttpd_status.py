"""lighttpd's ``?auto`` parser and its mapping onto Apache's letters, on their own (hostile and odd
input). The real lighttpd is read in tests/external/test_lighttpd.py."""

from __future__ import annotations

import struct
import time

from mpmcore.model import SourceFrame
from mpmcore.sources.attach import GRID_HEADER, grid_frame, parse_spec
from mpmcore.sources.grid import GRID_NO_MPM
from mpmcore.sources.lighttpd import LIGHTTPD_STATES, TO_APACHE, lighttpd_frame, parse_lighttpd_auto

AUTO = ("Total Accesses: 12\nTotal kBytes: 3\nUptime: 40\nBusyServers: 6\nIdleServers: 58\n"
        "Scoreboard: hkrRWC" + "_" * 58 + "\n")


def test_parse_counts_every_lighttpd_state():
    lt = parse_lighttpd_auto(AUTO)
    assert lt is not None
    assert (lt.accesses, lt.kbytes, lt.uptime, lt.busy_servers, lt.idle_servers) == (12, 3, 40, 6, 58)
    assert list(lt.states) == [ch for ch, _ in LIGHTTPD_STATES]
    assert lt.states["h"] == lt.states["k"] == lt.states["r"] == lt.states["R"] == 1 and lt.states["_"] == 58


def test_not_lighttpd():
    apache = "Total Accesses: 1\nTotal kBytes: 0\nUptime: 3\nBusyWorkers: 1\nIdleWorkers: 4\nScoreboard: W____\n"
    for text in ("", "garbage", apache, AUTO.replace("Uptime: 40", "Uptime: forty"),
                 AUTO.replace("hkrRWC", "hkrRWZ"), AUTO.replace("Scoreboard", "Scorebored")):
        assert parse_lighttpd_auto(text) is None, text


def test_frame_maps_letters_honestly():
    lt = parse_lighttpd_auto(AUTO)
    assert lt is not None
    f = lighttpd_frame(SourceFrame("lt", "lighttpd", "http://127.0.0.1:1/server-status", time.time()), lt,
                       "lighttpd/1.4.69")
    s = f.summary
    assert f.ok and s is not None and s.mpm == "lighttpd" and s.lighttpd is lt
    # h and W -> W, k -> K, r -> R, R (readpost: a request body) -> W, C -> C, _ -> _
    assert f.letters is not None and f.letters.startswith("WKRWWC_")
    assert s.state_counts is not None and s.count("W") == 3 and s.count("K") == 1 and s.count("R") == 1
    assert s.busy == 6 and s.idle == 58 and s.conns_total == 6 and s.processes is None and s.mpm_generation is None
    assert s.totals is not None and s.totals.bytes == 3 * 1024
    assert f.layout is not None and (f.layout.rows, f.layout.cols) == (2, 50)
    assert any("connection slot" in c for c in f.cannot_show) and any("once a second" in c for c in f.cannot_show)
    assert set(TO_APACHE) == {ch for ch, _ in LIGHTTPD_STATES}
    g = grid_frame(f)
    assert g is not None
    head = GRID_HEADER.unpack_from(g)
    assert head[2] == GRID_NO_MPM  # a scoreboard, no MPM: not drawn as "down"
    assert struct.unpack_from("<HH", g, GRID_HEADER.size - 8) == (2, 50)


def test_spec_kind():
    assert parse_spec("lt=lighttpd+http://127.0.0.1:1/server-status") == (
        "lighttpd", "lt", "http://127.0.0.1:1/server-status", {})
