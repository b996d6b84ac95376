"""The API application factory: ``create_app()`` builds the API alone (JSON routes, ``/health``).

The platform as served (``segarena serve``, the compose file, the tests' servers) is the composed app of
``server.app.create_app``: this API with the leaderboard's HTML pages in front.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.health import platform_version
from api.settings import Settings, get_settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> FastAPI:
    """Build the API app; with ``migrate`` the database is brought to the newest schema first."""
    settings = settings or get_settings()
    settings.ensure_dirs()
    if migrate:
        from api.db import migrate as run_migrations

        run_migrations(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from api.bootstrap import bootstrap

        bootstrap(app.state.settings)  # the settings every route reads (app.state.settings), not a copy
        yield

    app = FastAPI(
        title="SegArena",
        version=platform_version(),
        description="Challenge evaluation platform and leaderboard for promptable medical image segmentation.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)

    from api.health import router as health_router
    from api.routes import include_routes

    include_routes(app)
    app.include_router(health_router)

    from api.limits import BodyLimitMiddleware

    # added last, so it is the outermost of the app's own middleware: bodies are bounded before anything reads them
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    return app
