"""Mounts every router of the API, the leaderboard's JSON/CSV routes first (a hot path: FastAPI matches routes
in order). The HTML pages are not the API's: the composed app (``server.app``) puts them in front."""

from fastapi import FastAPI

from api.errors import ERROR_RESPONSES


def include_routes(app: FastAPI) -> None:
    from api.accounting.routes import router as accounting_router
    from api.admin.bulk import router as bulk_rerun_router
    from api.admin.routes import router as admin_router
    from api.auth.routes import router as auth_router
    from api.challenges.routes import router as challenges_router
    from api.execution.routes import admin_router as workers_admin_router
    from api.execution.routes import router as worker_router
    from api.leaderboard.routes import router as leaderboard_router
    from api.notifications.routes import router as notifications_router
    from api.participants.routes import router as participants_router
    from api.reports.routes import router as reports_router
    from api.status.routes import router as status_router
    from api.submissions.routes import router as submissions_router

    for router in (leaderboard_router, auth_router, challenges_router, submissions_router, admin_router,
                   status_router, workers_admin_router, worker_router, notifications_router, participants_router,
                   accounting_router, bulk_rerun_router, reports_router):
        app.include_router(router, responses=ERROR_RESPONSES)
