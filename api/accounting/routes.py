"""Compute accounting routes: a track's usage per team (organizers: every team; a participant: their own team),
the caller's team on every track, and every track at once for organizers (docs/accounting.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from api.accounting.service import team_tracks_usage, team_usage, usage
from api.deps import CurrentMember, OrganizerDep, SessionDep, SettingsDep
from api.errors import ApiError
from api.models import Challenge, Role, Track
from api.params import SlugPath

router = APIRouter(tags=["accounting"])


@router.get("/api/challenges/{challenge}/tracks/{track}/usage",
            summary="Compute used per team on a track (CPU-, GPU-, wall-seconds) with its budgets: organizers see "
                    "every team, a participant their own team")
def track_usage(challenge: SlugPath, track: SlugPath, member: CurrentMember, session: SessionDep,
                settings: SettingsDep) -> list[dict[str, Any]]:
    from api.challenges.service import get_track

    row = get_track(session=session, challenge=challenge, track=track, viewer=member, check_visible=False)
    if member.role == Role.organizer:
        return [u.as_dict() for u in usage(session, row, settings=settings)]
    if member.team_id is None:
        raise ApiError(403, "no_team", "you are not a member of a team; usage is counted per team")
    return [team_usage(session, row, member.team_id, settings=settings).as_dict()]


@router.get("/api/me/usage", summary="Your team's compute on every track it ran on or that has a budget")
def my_usage(member: CurrentMember, session: SessionDep, settings: SettingsDep) -> list[dict[str, Any]]:
    if member.team_id is None:
        return []
    return [u.as_dict() for u in team_tracks_usage(session, member.team_id, settings=settings)]


@router.get("/api/admin/usage", summary="Compute used per team and track, every track (organizers)")
def all_usage(organizer: OrganizerDep, session: SessionDep, settings: SettingsDep,
              challenge: Annotated[str | None, Query(max_length=64)] = None) -> list[dict[str, Any]]:
    q = select(Track).join(Challenge).order_by(Challenge.slug, Track.id)
    if challenge:
        q = q.where(Challenge.slug == challenge)
    return [u.as_dict() for t in session.scalars(q).all() for u in usage(session, t, settings=settings)]
