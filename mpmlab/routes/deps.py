"""The FastAPI dependencies every route takes: the Dashboard, and for a control call the Origin and
token check (``app.security``)."""

from __future__ import annotations

from fastapi import Depends, Request

from app.dashboard import Dashboard
from app.security import control_guard


def get_dashboard(request: Request) -> Dashboard:
    d: Dashboard = request.app.state.dashboard
    return d


Dash = Depends(get_dashboard)
Control = Depends(control_guard)
