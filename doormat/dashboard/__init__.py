"""The live dashboard: one pane per party, the controls, a sequence diagram, the
exposure matrix and the exercises' score board, served by the system's own process."""

from doormat.dashboard.app import create_app
from doormat.dashboard.hub import ActionError, Hub
from doormat.dashboard.panes import ROUTES, Route, route
from doormat.dashboard.server import DashboardOptions, Running, run_dashboard, serve

__all__ = [
    "ROUTES",
    "ActionError",
    "DashboardOptions",
    "Hub",
    "Route",
    "Running",
    "create_app",
    "route",
    "run_dashboard",
    "serve",
]
