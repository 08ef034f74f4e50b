"""The body of every error the JSON API answers, and the ``responses=`` a route declares with it, so
that /openapi.json documents what a client gets back on failure.

The body is what the exception handlers in ``mpmlab.main`` send (``{"detail": ...}``, plus
``"directive"`` when a directive was refused) and what FastAPI sends for an ``HTTPException``. A request
body that fails FastAPI's own validation is also a 422, whose ``detail`` is FastAPI's list of issues.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    detail: str | list[dict[str, Any]] = Field(
        description="what went wrong; for a request body FastAPI could not validate, its list of issues")
    directive: str | None = Field(None, description="the directive at fault (422 only; absent otherwise)")
    errors: list[str] | None = Field(None, description="every error, when a text had several (an httpd.conf: "
                                                       "'line 4: MaxRequestWorkers: missing value'); absent otherwise")


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that may fail with ``codes`` (403, the control guard, always included
    for control routes by the caller passing it)."""
    what = {403: "cross-origin request, or a token is required", 404: "no such pattern, preset or source",
            409: "the server refused the command", 422: "a refused value (the directive is named)",
            503: "the embedded server or the traffic generator is not running"}
    return {c: {"model": ErrorBody, "description": what.get(c, "error")} for c in codes}
