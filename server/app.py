"""The served application: ``uvicorn --factory server.app:create_app`` (what ``segarena serve`` runs).

The one place that mounts the pages: the API app of :func:`api.app.create_app` (JSON routes only; ``api`` imports
no ``leaderboard_web``) with the leaderboard's HTML pages (``leaderboard_web.pages``) in front of its routes.
"""

from __future__ import annotations

from fastapi import FastAPI

from api.app import create_app as create_api
from api.settings import Settings
from leaderboard_web import pages

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> FastAPI:
    """The API and the pages; with ``migrate`` the database is brought to the newest schema first."""
    app = create_api(settings, migrate=migrate)
    pages.mount(app)
    return app
