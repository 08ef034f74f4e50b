"""Target URLs and the loopback rule, shared by the traffic generator (``mpmcore.traffic``) and the
sources that watch real servers (``mpmcore.sources``).

A load generator, or a poller, must not be pointed at somebody else's server by accident. A target is accepted
when every address its host name resolves to is a loopback address (127.0.0.0/8, ::1, and
IPv4-mapped ::ffff:127.x). Anything else is refused before any socket is opened, unless the caller
passes ``allow_remote=True`` (``--allow-remote``). The connection is then made to the address that
was checked, not to a second resolution of the name (no DNS-rebinding window).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Target", "TargetError", "base_url", "is_loopback", "make_ssl_context", "parse_url", "resolve_target",
           "resolve_target_sync"]


class TargetError(ValueError):
    """The target URL is malformed or not allowed."""


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str  # "http" | "https"
    host: str  # as written (name or literal address, without brackets)
    port: int
    path: str  # path and query from the URL ("/" when empty)
    family: int = socket.AF_INET
    address: str = ""  # the resolved, checked address we connect to

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def sockaddr(self) -> tuple[str, int]:
        return (self.address, self.port)


def parse_url(url: str) -> Target:
    """Split and check the URL syntax (no resolution)."""
    if not isinstance(url, str) or not url:
        raise TargetError("target: a URL such as http://127.0.0.1:8080/ is required")
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise TargetError(f"target: scheme must be http or https, got {parts.scheme!r}")
    if not parts.hostname:
        raise TargetError(f"target: no host in {url!r}")
    if parts.username or parts.password:
        raise TargetError("target: credentials in the URL are not supported")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise TargetError(f"target: bad port in {url!r}: {exc}") from None
    if not 1 <= port <= 65535:
        raise TargetError(f"target: port must be between 1 and 65535, got {port}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(url=url, scheme=parts.scheme, host=parts.hostname, port=port, path=path)


def base_url(target: Target) -> str:
    """``scheme://host:port/`` of a target: where traffic aimed at this server goes."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{target.scheme}://{host}:{target.port}/"


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _check(target: Target, infos: list[tuple[Any, ...]], allow_remote: bool) -> Target:
    addrs = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            addrs.append((family, sockaddr[0]))
    if not addrs:
        raise TargetError(f"target: {target.host!r} did not resolve to an IP address")
    if not allow_remote:
        bad = sorted({a for _f, a in addrs if not is_loopback(a)})
        if bad:
            raise TargetError(
                f"target: {target.host} resolves to non-loopback address(es) {', '.join(bad)}; "
                "the traffic generator only sends to loopback (127.0.0.0/8, ::1, localhost) "
                "unless allow_remote=True (--allow-remote) is given"
            )
    # Prefer IPv4 loopback when a name resolves to both (what most test servers bind).
    addrs.sort(key=lambda fa: fa[0] != socket.AF_INET)
    family, address = addrs[0]
    return Target(target.url, target.scheme, target.host, target.port, target.path, family, address)


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return True
    except ValueError:
        return False


def resolve_target_sync(url: str, allow_remote: bool = False) -> Target:
    """Parse, resolve and check ``url``; raise TargetError when it is not allowed."""
    target = parse_url(url)
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_NUMERICHOST if _literal(target.host) else 0)
    except socket.gaierror as exc:
        raise TargetError(f"target: cannot resolve {target.host!r}: {exc}") from None
    return _check(target, infos, allow_remote)


async def resolve_target(url: str, allow_remote: bool = False) -> Target:
    target = parse_url(url)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_NUMERICHOST if _literal(target.host) else 0)
    except socket.gaierror as exc:
        raise TargetError(f"target: cannot resolve {target.host!r}: {exc}") from None
    return _check(target, infos, allow_remote)


def make_ssl_context(verify: bool = False, cafile: str | None = None) -> ssl.SSLContext:
    """Client TLS context. By default it does not verify, because the targets are loopback
    servers with self-signed certificates; ``verify=True`` (``--tls-verify``) checks the chain
    and host name against the system store or ``cafile``."""
    if verify:
        ctx = ssl.create_default_context(cafile=cafile)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
