"""Mounts every router of the API, the public leaderboard's first (its pages are the hottest path:
FastAPI matches routes in order)."""

from fastapi import FastAPI

from api.errors import ERROR_RESPONSES


def include_routes(app: FastAPI) -> None:
    from api.admin.routes import router as admin_router
    from api.auth.routes import router as auth_router
    from api.challenges.routes import router as challenges_router
    from api.execution.routes import admin_router as workers_admin_router
    from api.execution.routes import router as worker_router
    from api.status.routes import router as status_router
    from api.submissions.routes import router as submissions_router
    from leaderboard_web.routes import mount as mount_leaderboard

    mount_leaderboard(app)
    for router in (auth_router, challenges_router, submissions_router, admin_router, status_router,
                   workers_admin_router, worker_router):
        app.include_router(router, responses=ERROR_RESPONSES)
