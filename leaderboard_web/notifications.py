"""Organizer page of a challenge's notifications: ``/admin/challenges/{challenge}/notifications`` lists its
webhooks (never their secrets) and the delivery log (webhooks and e-mail, newest first, with every attempt).
Read-only: webhooks are added and removed with ``segarena admin webhook`` or the API (docs/notifications.md)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from api.errors import ApiError
from api.leaderboard.viewer import request_session
from api.params import SlugPath

__all__ = ["router"]

router = APIRouter(tags=["pages"])


@router.get("/admin/challenges/{challenge}/notifications", response_class=HTMLResponse, include_in_schema=False)
def notifications_page(challenge: SlugPath, request: Request,
                       state: str | None = Query(None, pattern="^(pending|delivered|failed|cancelled)$")) -> Response:
    from api.notifications import service
    from api.notifications.events import KINDS
    from leaderboard_web.pages import _error_page, _organizer_viewer, _page, _render

    with request_session(request) as session:
        viewer = _organizer_viewer(request, session, "only organizers may see a challenge's notifications")
        if isinstance(viewer, Response):
            return viewer
        try:
            hooks = service.list_webhooks(session=session, challenge=challenge, removed=True)
            rows = service.list_deliveries(session=session, challenge=challenge, state=state, limit=200)
        except ApiError as exc:
            return _error_page(request, exc.status, "Not found", exc.message, viewer)
        counts: dict[str, int] = {}
        for d in rows:
            counts[d.state] = counts.get(d.state, 0) + 1
        return _page(_render("notifications.html", request, challenge=challenge, hooks=hooks, deliveries=rows,
                             counts=counts, kinds=KINDS, state=state, viewer=viewer, organizer=True))
