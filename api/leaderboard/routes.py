"""The leaderboard's JSON and CSV routes (part of the API; the HTML pages are ``leaderboard_web``).

* ``GET /api/challenges/{challenge}/tracks/{track}/leaderboard`` — every column the page shows, plus the scheme, metric
  profile and frozen/hidden flags (:meth:`api.leaderboard.board.Board.to_dict`);
* ``GET …/leaderboard.csv`` — exactly the page's columns and cell text;
* ``GET …/stability`` — organizers: bootstrap ranking stability and the significance map;
* ``GET /api/challenges/{challenge}/prompt-comparison`` — tracks on one test set under different prompt modes, side
  by side.

The first two are served from the response cache (``api.leaderboard.cache``).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.leaderboard import cache, service
from api.leaderboard.board import Board, board_csv, to_json_bytes
from api.leaderboard.viewer import is_organizer, member_of, request_credentials, request_session, require_organizer
from api.models import Track

__all__ = ["router"]

router = APIRouter(tags=["leaderboard"])


@router.get("/api/challenges/{challenge}/tracks/{track}/leaderboard", summary="Leaderboard of a track (JSON)")
async def leaderboard_json(challenge: str, track: str, request: Request) -> Response:
    """Every column and row of the track's leaderboard page, plus scheme, profile and flags."""
    def render(_s: Session, _track: Track, board: Board) -> cache.Rendered:
        return cache.Rendered(200, to_json_bytes(board.to_dict()), "application/json", {})
    return await cache.board_response(request, "json", challenge, track, render)


@router.get("/api/challenges/{challenge}/tracks/{track}/leaderboard.csv", summary="Leaderboard of a track (CSV)",
            response_class=Response,
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                             "description": "The page's table as CSV, every column"}})
async def leaderboard_csv(challenge: str, track: str, request: Request) -> Response:
    """The leaderboard table exactly as the page shows it, as CSV."""
    def render(_s: Session, _track: Track, board: Board) -> cache.Rendered:
        name = f"{board.info.challenge}-{board.info.track}-leaderboard.csv"
        return cache.Rendered(200, board_csv(board), "text/csv; charset=utf-8",
                              {"Content-Disposition": f'attachment; filename="{name}"'})
    return await cache.board_response(request, "csv", challenge, track, render)


@router.get("/api/challenges/{challenge}/prompt-comparison",
            summary="Tracks running the same test set under different prompt modes, side by side")
def prompt_comparison_json(challenge: str, request: Request) -> Response:
    """Per group of tracks sharing a test set with different ``prompt`` modes (box / point / box+point): the tracks
    and, per team, its rank, DSC and NSD (and AUCs on interactive tracks) on each. Hidden tracks for organizers only."""
    token, source = request_credentials(request)
    with request_session(request) as session:
        member = member_of(session, token, source) if token else None
        ch = service.find_challenge(session, challenge)
        if ch is None:
            raise ApiError(404, "not_found", f"challenge {challenge!r} does not exist; GET /api/challenges lists them")
        cards = service.challenge_cards(session, ch, organizer=is_organizer(member))
        out = {"challenge": ch.slug, "groups": service.prompt_comparison(cards)}
    return Response(to_json_bytes(out), media_type="application/json")


@router.get("/api/challenges/{challenge}/tracks/{track}/stability", summary="Ranking stability (organizers)")
def stability_json(challenge: str, track: str, request: Request, n_boot: int = 1000, metric: str = "dsc",
                   alpha: float = 0.05) -> Response:
    """Bootstrap ranking stability (Kendall's τ) and the Holm-corrected Wilcoxon significance map."""
    if not 10 <= n_boot <= 10000:
        raise ApiError(422, "invalid_request", "n_boot must be between 10 and 10000")
    if not 0 < alpha < 1:
        raise ApiError(422, "invalid_request", "alpha must be between 0 and 1")
    with request_session(request) as session:
        require_organizer(request, session, "only organizers may see ranking stability")
        row = service.find_track(session, challenge, track)
        if row is None:
            raise ApiError(404, "not_found", f"no track {track!r} in challenge {challenge!r}")
        try:
            out = service.stability(session, row, n_boot=n_boot, metric=metric, alpha=alpha)
        except ValueError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
    return Response(to_json_bytes(out), media_type="application/json")
