"""Web pages for people: the patient portal and the data steward console (served by
each node), and the public-health dashboard (served by the hub).

Server-rendered (FastAPI + Jinja2) with a little plain JavaScript as progressive
enhancement: every page reads, and every form posts, with scripts disabled. Pages obtain
their caller exactly like the API — from a verified access token of the node, obtained
through the node's own OAuth sign-in (:mod:`.session`) — so the consent gate, scopes and
audit apply unchanged. See docs/web.md.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

__all__ = ["install_hub_pages", "install_node_pages"]

STATIC = Path(__file__).parent / "static"


def install_node_pages(app: FastAPI) -> None:
    """Add the patient portal, the steward console and their static files to a node app."""
    from healthmesh.web import pages, portal, steward

    app.mount("/web/static", StaticFiles(directory=STATIC), name="web-static")
    app.include_router(pages.router)
    app.include_router(portal.router)
    app.include_router(steward.router)


def install_hub_pages(app: FastAPI, hub_folder: Path) -> None:
    """Add the public-health dashboard to the hub app (see :mod:`.dashboard`)."""
    from healthmesh.web import dashboard

    app.mount("/web/static", StaticFiles(directory=STATIC), name="web-static")
    app.state.dashboard = dashboard.Dashboard.open(hub_folder)
    app.include_router(dashboard.router)
