"""The FastAPI dependencies every route takes: the Dashboard, and for a control call the Origin and
token check (``mpmlab.security``)."""

from __future__ import annotations

from fastapi import Depends, Request

from mpmlab.dashboard import Dashboard
from mpmlab.security import control_guard


def get_dashboard(request: Request) -> Dashboard:
    d: Dashboard = request.app.state.dashboard
    return d


Dash = Depends(get_dashboard)
Control = Depends(control_guard)
