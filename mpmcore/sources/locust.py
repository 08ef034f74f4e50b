"""A running Locust master as a traffic source: its statistics, read from its web UI's
``/stats/requests`` JSON (what Locust's own page polls), summed by Locust over all its workers.

``LocustMaster(url)`` polls ``URL/stats/requests`` and returns ``mpmcore.model.LocustStats``;
like every attached source it only talks to loopback unless ``allow_remote`` (the connection
goes to the checked address) and never raises: a refused connection, a timeout, a page that is
not Locust's become ``ok=False`` with a sentence. mpmlab's patterns as Locust user classes:
``mpmcore/traffic/locustfile.py``; how this scales past one machine: docs/ecosystem.md.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mpmcore.model import LocustRow, LocustStats
from mpmcore.netloc import TargetError, resolve_target_sync
from mpmcore.sources.client import DEFAULT_TIMEOUT, SourceError, get

STATS_PATH = "/stats/requests"
AGGREGATED = "Aggregated"


def _num(d: dict[str, Any], key: str) -> float:
    v = d.get(key)
    return float(v) if isinstance(v, (int, float)) else 0.0


def _opt(d: dict[str, Any], key: str) -> float | None:
    v = d.get(key)
    return float(v) if isinstance(v, (int, float)) else None


def parse_row(d: dict[str, Any]) -> LocustRow:
    return LocustRow(method=str(d.get("method") or ""), name=str(d.get("name") or ""),
                     requests=int(_num(d, "num_requests")), failures=int(_num(d, "num_failures")),
                     rps=round(_num(d, "current_rps"), 2), fail_per_s=round(_num(d, "current_fail_per_sec"), 2),
                     avg_ms=round(_num(d, "avg_response_time"), 2), max_ms=round(_num(d, "max_response_time"), 2),
                     p50_ms=_opt(d, "response_time_percentile_0.5"), p95_ms=_opt(d, "response_time_percentile_0.95"))


def parse_stats(name: str, url: str, t: float, body: Any) -> LocustStats:
    """Locust's ``/stats/requests`` answer (parsed JSON) as LocustStats; ValueError when it is not one."""
    if not isinstance(body, dict) or not isinstance(body.get("stats"), list) or "state" not in body:
        raise ValueError("not a Locust /stats/requests answer (no stats list and state)")
    rows = [parse_row(r) for r in body["stats"] if isinstance(r, dict)]
    total = next((r for r in rows if r.name == AGGREGATED and not r.method), None)
    workers = body.get("worker_count")
    return LocustStats(name=name, url=url, t=t, ok=True, state=str(body["state"]),
                       users=int(body.get("user_count") or 0),
                       workers=int(workers) if isinstance(workers, int) else None,
                       rows=tuple(r for r in rows if r is not total), total=total)


_SPEC = re.compile(r"^(?:(?P<name>[^=:/]+)=)?locust\+(?P<url>.+)$", re.I)


def locust_spec(spec: str) -> tuple[str | None, str] | None:
    """``[NAME=]locust+URL`` (an ``--attach`` value) -> (name, url); None for any other kind."""
    m = _SPEC.match(spec.strip())
    return (m.group("name").strip() if m.group("name") else None, m.group("url").strip()) if m else None


def split_base(url: str) -> str:
    """``http://127.0.0.1:8089`` (or with a path prefix) without query and trailing slash."""
    if "://" not in url:
        url = "http://" + url
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, p.path.rstrip("/"), "", ""))


class LocustMaster:
    """A Locust master's web UI at ``url`` (``http://127.0.0.1:8089``)."""

    kind = "locust"

    def __init__(self, url: str, name: str | None = None, *, allow_remote: bool = False,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = split_base(url)
        self.name = name or (urlsplit(self.url).netloc or self.url)
        self.allow_remote = allow_remote
        self.timeout = timeout

    def poll(self) -> LocustStats:
        t0 = time.perf_counter()
        now = time.time()
        try:
            target = resolve_target_sync(self.url + "/", allow_remote=self.allow_remote)
            ans = get(target, urlsplit(self.url).path + STATS_PATH, self.timeout, accept="application/json")
            if ans.status != 200:
                raise SourceError("http-status", f"{self.url}{STATS_PATH} answered {ans.status}: not a Locust "
                                                 "web UI (is the master started without --headless?)")
            try:
                stats = parse_stats(self.name, self.url, now, json.loads(ans.body))
            except ValueError as e:
                raise SourceError("not-status-page", f"{self.url}{STATS_PATH}: {e}") from None
        except SourceError as e:
            stats = LocustStats(self.name, self.url, now, ok=False, error=str(e))
        except TargetError as e:
            msg = str(e)
            if "non-loopback" in msg:
                msg = (f"attach {self.url}: not a loopback address; a Locust master elsewhere is read only when "
                       "remote attach is allowed (allow_remote_attach = true, MPMLAB_ALLOW_REMOTE_ATTACH=1)")
            stats = LocustStats(self.name, self.url, now, ok=False, error=msg.replace("target:", f"attach {self.url}:", 1))
        except Exception as e:  # a bug here must not stop the poller
            stats = LocustStats(self.name, self.url, now, ok=False, error=f"{type(e).__name__}: {e}")
        return dataclasses.replace(stats, poll_ms=round((time.perf_counter() - t0) * 1000, 2))
