"""The peer for bench_core: the same 1 KiB reply from a WSGI app under gunicorn."""

BODY = b"x" * 1024


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BODY)))])
    return [BODY]
