"""Organizer page of a challenge's compute: ``/admin/challenges/{challenge}/usage`` lists, per track and team, the
container CPU-, GPU- and wall-seconds used, organizer re-runs apart, the budgets with the share used and the
warnings recorded (api/accounting, docs/accounting.md). Read-only: budgets are track settings
(``budget_cpu_s`` / ``budget_gpu_s``: ``segarena admin apply``, or PATCH the track)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from api.leaderboard.viewer import request_session, request_settings
from api.params import SlugPath

__all__ = ["router"]

router = APIRouter(tags=["pages"])


@router.get("/admin/challenges/{challenge}/usage", response_class=HTMLResponse, include_in_schema=False)
def usage_page(challenge: SlugPath, request: Request) -> Response:
    from api.accounting.service import THRESHOLDS, usage
    from api.models import Challenge, Track
    from leaderboard_web.pages import _error_page, _organizer_viewer, _page, _render

    with request_session(request) as session:
        viewer = _organizer_viewer(request, session, "only organizers may see the teams' compute")
        if isinstance(viewer, Response):
            return viewer
        ch = session.scalar(select(Challenge).where(Challenge.slug == challenge))
        if ch is None:
            return _error_page(request, 404, "Not found", f"challenge {challenge!r} does not exist", viewer)
        settings = request_settings(request)
        tracks = session.scalars(select(Track).where(Track.challenge_id == ch.id).order_by(Track.id)).all()
        sections = [(t, [u.as_dict() for u in usage(session, t, settings=settings)]) for t in tracks]
        return _page(_render("usage.html", request, challenge=ch, sections=sections, thresholds=THRESHOLDS,
                             viewer=viewer, organizer=True))
