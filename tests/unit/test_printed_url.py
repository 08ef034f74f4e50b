"""The start line's URL: a generated token whole (the only way to learn it), a chosen one never
(it would land whole in a container's logs)."""

from __future__ import annotations

from mpmlab.main import printed_url
from mpmlab.settings import DashboardSettings


def test_generated_token_is_printed_whole():
    s = DashboardSettings()
    s.check()
    assert s.token_generated and s.token
    assert printed_url(s) == f"http://127.0.0.1:8000/?token={s.token}"


def test_chosen_token_is_redacted():
    secret = "change-me-please-42"
    s = DashboardSettings(host="0.0.0.0", token=secret)
    s.check()
    line = printed_url(s)
    assert secret not in line and secret[2:] not in line and "MPMLAB_TOKEN" in line
    assert line.startswith("http://0.0.0.0:8000/?token=ch\u2026")


def test_no_token_no_query():
    s = DashboardSettings(no_token=True)
    s.check()
    assert printed_url(s) == "http://127.0.0.1:8000/"
