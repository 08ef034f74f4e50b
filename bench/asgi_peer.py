"""The uvicorn peer for bench_peers: the same 1 KiB reply from a minimal ASGI app."""

BODY = b"x" * 1024
HEADERS = [(b"content-type", b"application/octet-stream"), (b"content-length", b"1024")]
START = {"type": "http.response.start", "status": 200, "headers": HEADERS}
REPLY = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send(START)
    await send(REPLY)
