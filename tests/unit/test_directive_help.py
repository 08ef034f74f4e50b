"""Every directive the dashboard shows has its "why" help (mpmcore.directives.WHY)."""

from __future__ import annotations

import pytest

from mpmcore.directives import DIRECTIVES, MPMS, WHY, catalogue

pytestmark = pytest.mark.unit


def test_every_directive_has_why_help() -> None:
    assert set(WHY) == set(DIRECTIVES)
    for name, text in WHY.items():
        assert len(text) >= 60 and text.endswith("."), name


@pytest.mark.parametrize("mpm", MPMS)
def test_catalogue_carries_why(mpm: str) -> None:
    rows = catalogue(mpm)
    assert rows and all(r["why"] == WHY[r["name"]] for r in rows)
