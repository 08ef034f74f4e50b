"""nginx's stub_status, read into the typed model.

``NginxSource(url)``: Active connections, accepts/handled/requests, Reading/Writing/Waiting. nginx
has no scoreboard: the summary says what stub_status says and leaves the rest ``None``.
"""

from __future__ import annotations

import dataclasses
import re

from mpmcore.model import Capabilities, NginxCounts, ProcSum, SourceFrame, Summary, Totals
from mpmcore.netloc import Target
from mpmcore.sources.client import SourceError, get
from mpmcore.sources.frames import HTTPSource

CANNOT_NGINX = (
    "nginx has no scoreboard: per-worker states are not available",
    "nginx's stub_status has no per-process or per-worker table",
    "nginx's stub_status has no busy/idle worker counts, no generation and no uptime",
    "nginx's stub_status counts requests but not bytes: no traffic volume",
    "nginx's stub_status has no memory figures",
    "each poll is itself a request: one Writing connection (and one request) is the poller's own",
)

_STUB = re.compile(
    r"Active connections:\s*(?P<active>\d+)\s+server accepts handled requests\s+"
    r"(?P<accepts>\d+)\s+(?P<handled>\d+)\s+(?P<requests>\d+)\s+"
    r"Reading:\s*(?P<reading>\d+)\s+Writing:\s*(?P<writing>\d+)\s+Waiting:\s*(?P<waiting>\d+)")


def looks_like_stub_status(text: str) -> bool:
    return text.lstrip().startswith("Active connections:")


def parse_stub_status(text: str) -> NginxCounts | None:
    """nginx's stub_status as counts, or None when ``text`` is not one."""
    m = _STUB.search(text)
    return NginxCounts(**{k: int(v) for k, v in m.groupdict().items()}) if m else None


def nginx_frame(frame: SourceFrame, stub: NginxCounts, server_header: str | None) -> SourceFrame:
    """``frame`` (a poll's start) filled from stub_status' counts."""
    summary = Summary(
        server_version=server_header, mpm="nginx", current_time=frame.t,
        extended_status=False,
        conns_total=stub.active,
        # nginx's Waiting: idle keep-alive connections, held by no worker: what event parks
        conns_async_keep_alive=stub.waiting,
        proc_sum=ProcSum(connections=stub.active, keep_alive=stub.waiting),
        totals=Totals(accesses=stub.requests),
        nginx=stub,
    )
    return dataclasses.replace(
        frame, ok=True, summary=summary, connections=stub,
        raw={k: str(v) for k, v in dataclasses.asdict(stub).items()},
        capabilities=Capabilities(totals=True, connections=True), cannot_show=CANNOT_NGINX)


class NginxSource(HTTPSource):
    """nginx's stub_status at ``url`` (``http://127.0.0.1:8082/nginx_status``)."""

    kind = "nginx"

    def _poll(self, target: Target, frame: SourceFrame) -> SourceFrame:
        ans = get(target, self.path, self.timeout)
        if ans.status != 200:
            raise SourceError("http-status", f"{self.url} answered {ans.status}: not a stub_status page "
                                             "(is `stub_status;` set in this location?)")
        stub = parse_stub_status(ans.body.decode("latin-1"))
        if stub is None:
            raise SourceError("not-status-page", f"{self.url} is not nginx's stub_status page "
                                                 "(no 'Active connections' block)")
        return nginx_frame(frame, stub, ans.headers.get("server"))
