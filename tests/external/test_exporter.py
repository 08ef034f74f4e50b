"""Prometheus' apache_exporter (Debian's package) pointed at a running mpmcore reads it like Apache."""

from __future__ import annotations

import socket

from conftest import http_get, read_response, wait_for
from exporter_fixtures import scrape


def test_apache_exporter_reads_a_live_mpmcore(server_factory, exporter):
    srv = server_factory(mpm="event", settings={"ServerLimit": 2, "ThreadsPerChild": 8, "MaxRequestWorkers": 16,
                                                "StartServers": 2, "MinSpareThreads": 1, "MaxSpareThreads": 16,
                                                "KeepAliveTimeout": 60})
    wait_for(lambda: srv.count_states()["_"] == 16, what="16 idle threads")
    for _ in range(10):
        assert http_get(srv.port, "/bytes/1000")[0] == 200
    idle_clients = []
    for _ in range(2):  # parked keep-alive connections
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s)[0] == 200
        idle_clients.append(s)
    # (the fixture returns once the exporter answers, its first scrape done)
    port = exporter(f"http://127.0.0.1:{srv.port}/server-status?auto")
    # ours 2, plus the exporter's own keep-alive connection between scrapes
    wait_for(lambda: int(srv.auto()["ConnsAsyncKeepAlive"]) == 3, what="3 parked")
    # A scrape, then our ?auto at once. As on Apache, a request is counted (and its slot leaves W)
    # just after its reply is sent, so on a busy machine our previous ?auto may not be counted yet
    # when the exporter scrapes: take the first pair read in a settled moment (deadline 15 s).
    last: list = []

    def settled():
        values, auto = scrape(port), srv.auto()
        last[:] = [values, auto]
        ok = (values is not None and values["apache_up"] == 1
              # our ?auto came right after the exporter's scrape, which is counted by then
              and values["apache_accesses_total"] == int(auto["Total Accesses"]) - 1
              and values['apache_workers{state="busy"}'] == 1  # the scrape itself, as on Apache
              and values['apache_workers{state="idle"}'] == 15
              and values['apache_scoreboard{state="idle"}'] == 15
              and values['apache_scoreboard{state="reply"}'] == 1
              and values['apache_connections{state="keepalive"}'] == 2  # the exporter's is busy scraping
              and int(auto["ConnsAsyncKeepAlive"]) == 3)
        return (values, auto) if ok else None
    try:
        try:
            values, _auto = wait_for(settled, timeout=15, interval=0.2, what="the exporter's figures and ?auto")
        except AssertionError as e:
            raise AssertionError(f"{e}; last scrape and ?auto: {last}") from None
        assert values['apache_processes{state="all"}'] == 2
        assert values['apache_info{mpm="event",version="mpmlab/0.1.0 (Unix)"}'] == 1
        assert values["apache_sent_kilobytes_total"] >= (10 * 1000) >> 10
    finally:
        for s in idle_clients:
            s.close()
