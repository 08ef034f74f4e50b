"""The one small HTTP GET client of mpmlab's pollers: a status page from a checked address.

``get(target, path)`` sends one GET (``Connection: close``) to the address ``mpmcore.netloc``
resolved and checked for ``target`` (no second DNS resolution), reads at most MAX_BODY bytes and
returns an ``Answer``. ``http.client`` decodes the body framing (Content-Length, chunked transfer
coding, or read to close). Every failure is a ``SourceError`` with a short machine-readable
``kind`` (``mpmcore.model.ErrorKind``) and a sentence for the page.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import ssl
from dataclasses import dataclass, field

from mpmcore.model import ErrorKind
from mpmcore.netloc import Target, make_ssl_context

#: Seconds for connect and for each read of one status request.
DEFAULT_TIMEOUT = 3.0
#: Largest status page read. Apache's HTML page with 256 x 64 busy slots is about 5 MB.
MAX_BODY = 16 << 20
USER_AGENT = "mpmlab-attach"
ACCEPT = "text/plain, text/html;q=0.9, */*;q=0.1"


class SourceError(Exception):
    """A GET (or what it answered) failed; ``kind`` is a short machine-readable reason."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "text/plain")


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One context for every poll (it loads the CA store and cipher list once; SSLContext is
    shareable across threads). Not verified: status pages of test servers are self-signed."""
    return make_ssl_context(verify=False)


def get(target: Target, path: str, timeout: float = DEFAULT_TIMEOUT, *, accept: str = ACCEPT) -> Answer:
    """One GET to the checked address of ``target``; raises SourceError."""
    conn: http.client.HTTPConnection
    if target.tls:
        conn = http.client.HTTPSConnection(target.address, target.port, timeout=timeout, context=_tls_context())
    else:
        conn = http.client.HTTPConnection(target.address, target.port, timeout=timeout)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", target.host_header)
        conn.putheader("User-Agent", USER_AGENT)
        conn.putheader("Accept", accept)
        conn.putheader("Connection", "close")
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise SourceError("not-status-page", f"{target.url}: answer larger than {MAX_BODY} bytes: "
                                                 "not a status page")
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    except SourceError:
        raise
    except TimeoutError:
        raise SourceError("timeout", f"{target.host_header}: no answer within {timeout:g} s") from None
    except ConnectionRefusedError:
        raise SourceError("unreachable", f"{target.host_header}: connection refused (is the server running?)") from None
    except (OSError, http.client.HTTPException) as e:
        raise SourceError("unreachable", f"{target.host_header}: {type(e).__name__}: {e}") from None
    finally:
        conn.close()


async def get_async(target: Target, path: str, timeout: float = DEFAULT_TIMEOUT, *, accept: str = ACCEPT) -> Answer:
    """``get`` in a worker thread, for code running in an event loop."""
    return await asyncio.to_thread(get, target, path, timeout, accept=accept)
