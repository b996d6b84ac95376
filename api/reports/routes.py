"""``GET /api/admin/challenges/{challenge}/tracks/{track}/report.json``: the challenge report's data (organizers)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.errors import ApiError
from api.leaderboard import service as lb
from api.leaderboard.board import to_json_bytes
from api.leaderboard.viewer import request_session, require_organizer
from api.reports.service import build_report

__all__ = ["router"]

router = APIRouter(tags=["admin"])


@router.get("/api/admin/challenges/{challenge}/tracks/{track}/report.json",
            summary="Challenge report of a track (organizers)")
def report_json(challenge: str, track: str, request: Request, n_boot: int = 1000, alpha: float = 0.05,
                seed: int = 0) -> Response:
    """Ranking with its scheme, bootstrap ranking stability, significance maps (DSC, NSD), per-modality and
    per-size-class tables, runtime and memory distributions, failures by reason, submissions over time and the
    test set's description (docs/report.md)."""
    if not 1000 <= n_boot <= 20000:
        raise ApiError(422, "invalid_request", "n_boot must be between 1000 and 20000 (challengeR uses 1000)")
    if not 0 < alpha < 1:
        raise ApiError(422, "invalid_request", "alpha must be between 0 and 1, e.g. 0.05")
    with request_session(request) as session:
        require_organizer(request, session, "only organizers may generate the challenge report")
        row = lb.find_track(session, challenge, track)
        if row is None:
            raise ApiError(404, "not_found", f"no track {track!r} in challenge {challenge!r}; "
                                             f"GET /api/challenges/{challenge} lists its tracks")
        t0 = time.perf_counter()
        out = build_report(session, row, n_boot=n_boot, alpha=alpha, seed=seed)
        out["build_s"] = round(time.perf_counter() - t0, 3)
    return Response(to_json_bytes(out), media_type="application/json")
