"""Websockets.

* ``/ws/scoreboard``: binary grid frames (mpmlab.services.grid) at up to GRID_HZ and JSON summaries at
  SUMMARY_HZ, for the canvas and the charts.
* ``/ws/live``: HTML fragments with ``hx-swap-oob`` for htmx's ws extension: "what is happening",
  totals, the process table, the error log as it grows, running traffic, and each attached
  server's panel (tiles, process table, what it cannot show).
* ``/ws/sources``: the attached servers (``mpmlab.services.sources``): per source, its grid frame in an envelope
  naming the source (binary) and its summary (JSON with ``"source"``), at its poll rate.

All three check the Origin (a page on another site must not read or drive the dashboard). Each client
has a sender task fed by its own Channel (mpmlab.services.hub): nothing here ever makes the sampler wait.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from mpmlab.dashboard import Dashboard
from mpmlab.security import check_websocket
from mpmlab.services.hub import Channel, Hub
from mpmlab.settings import LOG_BACKLOG

router = APIRouter()

#: A send that takes longer than this means the browser stopped reading: drop the client.
SEND_TIMEOUT = 10.0
POLICY_VIOLATION = 1008


async def _open(ws: WebSocket) -> Dashboard | None:
    """The dashboard, with the websocket accepted; None when its Origin was refused (before
    accept(): Starlette answers the handshake with HTTP 403)."""
    d: Dashboard = ws.app.state.dashboard
    why = check_websocket(ws, d.settings)
    if why:
        await ws.close(code=POLICY_VIOLATION, reason=why[:120])
        return None
    await ws.accept()
    return d


async def _pump(ws: WebSocket, hub: Hub, first: list[Any]) -> None:
    ch: Channel = hub.subscribe()
    done = asyncio.Event()

    async def receive() -> None:
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            done.set()

    async def send(msg: Any) -> None:
        if isinstance(msg, (bytes, bytearray)):
            await asyncio.wait_for(ws.send_bytes(bytes(msg)), SEND_TIMEOUT)
        else:
            await asyncio.wait_for(ws.send_text(msg), SEND_TIMEOUT)
        ch.sent += 1

    async def sender() -> None:
        for m in first:
            await send(m)
        while True:
            lines, latest = await ch.take()
            for kind, items in lines.items():
                if kind == "log":
                    await send(_log_fragment(ws, items))
            for msg in latest.values():
                await send(msg)

    recv_task = asyncio.create_task(receive())
    send_task = asyncio.create_task(sender())
    try:
        await asyncio.wait({recv_task, send_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # no await here: when the server cancels this handler, the cancellation must go straight out
        hub.unsubscribe(ch)
        for t in (recv_task, send_task):
            t.cancel()
    await asyncio.gather(recv_task, send_task, return_exceptions=True)
    if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
        try:
            await ws.close()
        except RuntimeError:
            pass


def _log_fragment(ws: WebSocket, lines: list[str], swap: str = "beforeend") -> str:
    d: Dashboard = ws.app.state.dashboard
    return str(d.templates.get_template("live/_log_lines.html").render(lines=lines, swap=swap))


@router.websocket("/ws/scoreboard")
async def ws_scoreboard(ws: WebSocket) -> None:
    d = await _open(ws)
    if d is None:
        return
    s = d.sampler
    hello = {"type": "hello", "grid_hz": d.settings.grid_hz, "summary_hz": d.settings.summary_hz,
             "patterns": s.grid.patterns if s.grid else []}
    first: list[Any] = [json.dumps(hello)]
    if s.last_frame is not None:
        first.append(s.last_frame)  # the grid at once, even when it stays unchanged for a while
    await _pump(ws, s.grid_hub, first)


@router.websocket("/ws/live")
async def ws_live(ws: WebSocket) -> None:
    d = await _open(ws)
    if d is None:
        return
    first: list[Any] = []
    if d.settings.watch_core:
        # the log's last lines replace the page's: nothing written while the page loaded or while
        # the socket was down is missing, and nothing is shown twice (new lines follow from here on:
        # _pump subscribes before it yields to the loop that appends them)
        first.append(_log_fragment(ws, list(d.sampler.log_lines)[-LOG_BACKLOG:], swap="innerHTML"))
    if d.sampler.summary is not None:
        first.append(d.render_live(d.sampler.live_context()))
    first += [d.render_source(src) for src in d.sources.sources if src.frame is not None]
    await _pump(ws, d.sampler.live_hub, first)


@router.websocket("/ws/sources")
async def ws_sources(ws: WebSocket) -> None:
    d = await _open(ws)
    if d is None:
        return
    hello = {"type": "hello", "interval": d.settings.attach_interval,
             "sources": [s.to_dict(frame=False) for s in d.sources.sources]}
    await _pump(ws, d.sources.hub, [json.dumps(hello)] + d.sources.first_messages())
