"""Target URLs and the loopback rule: they live in ``mpmcore.netloc`` (the sources use them too)."""

from mpmcore.netloc import (
    Target,
    TargetError,
    base_url,
    is_loopback,
    make_ssl_context,
    parse_url,
    resolve_target,
    resolve_target_sync,
)

__all__ = ["Target", "TargetError", "base_url", "is_loopback", "make_ssl_context", "parse_url", "resolve_target",
           "resolve_target_sync"]
