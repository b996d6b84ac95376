"""Mounts every router of the API, and the leaderboard's pages when that part is installed."""

import logging

from fastapi import FastAPI

log = logging.getLogger("segarena.api")


def include_routes(app: FastAPI) -> None:
    from api.admin.routes import router as admin_router
    from api.auth.routes import router as auth_router
    from api.challenges.routes import router as challenges_router
    from api.submissions.routes import router as submissions_router

    for router in (auth_router, challenges_router, submissions_router, admin_router):
        app.include_router(router)
    try:
        from leaderboard_web.routes import router as leaderboard_router
    except ImportError as exc:  # the leaderboard part is not in this build (or not yet written)
        if not (exc.name or "").startswith("leaderboard_web"):
            raise
        log.info("leaderboard_web.routes not available: %s", exc)
    else:
        app.include_router(leaderboard_router)
