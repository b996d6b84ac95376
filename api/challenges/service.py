"""Challenges and tracks: creation, updates, visibility, and whether a track takes submissions now."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from api.audit import record
from api.challenges import schemas
from api.errors import ApiError
from api.models import Challenge, Member, Role, Track, Visibility, utcnow
from api.params import as_utc

__all__ = ["create_challenge", "list_challenges", "get_challenge", "get_track", "update_track", "set_visibility",
           "track_public", "challenge_public", "is_open", "ensure_open", "is_organizer", "track_visible"]

_NULLABLE = {"opens_at", "closes_at", "budget_cpu_s", "budget_gpu_s"}


def is_open(track: Track, now: datetime | None = None) -> bool:
    """True if ``track`` takes submissions at ``now``."""
    now = now or utcnow()
    opens, closes = as_utc(track.opens_at), as_utc(track.closes_at)
    return (opens is None or opens <= now) and (closes is None or now < closes)


def ensure_open(track: Track, now: datetime | None = None) -> None:
    """Raise 403 ``track_closed`` unless the track takes submissions now."""
    now = now or utcnow()
    opens, closes = as_utc(track.opens_at), as_utc(track.closes_at)
    if opens is not None and now < opens:
        raise ApiError(403, "track_closed", f"track {track.slug!r} opens for submissions at {opens.isoformat()}; submit then")
    if closes is not None and now >= closes:
        raise ApiError(403, "track_closed", f"track {track.slug!r} closed for submissions at {closes.isoformat()}")


def is_organizer(member: Member | None) -> bool:
    return member is not None and member.role == Role.organizer


def track_visible(track: Track, member: Member | None) -> bool:
    """Whether ``member`` (None: anonymous) may know the track exists: hidden tracks are for organizers only."""
    return track.visibility != Visibility.hidden or is_organizer(member)


def track_public(track: Track, member: Member | None = None, *, organizer: bool | None = None) -> schemas.TrackPublic:
    """A track as ``member`` may see it: the test set (a server path) only for organizers."""
    org = is_organizer(member) if organizer is None else organizer
    fields = {name: getattr(track, name) for name in schemas.TrackPublic.model_fields if hasattr(Track, name)}
    fields.update(challenge=track.challenge.slug, is_open=is_open(track),
                  opens_at=as_utc(track.opens_at), closes_at=as_utc(track.closes_at), frozen_at=as_utc(track.frozen_at))
    if not org:
        fields["testset"] = None
    return schemas.TrackPublic(**fields)


def challenge_public(challenge: Challenge, member: Member | None = None, *,
                     organizer: bool | None = None) -> schemas.ChallengePublic:
    """A challenge as ``member`` may see it: hidden tracks only for organizers."""
    org = is_organizer(member) if organizer is None else organizer
    tracks = [t for t in challenge.tracks if org or t.visibility != Visibility.hidden]
    return schemas.ChallengePublic(id=challenge.id, slug=challenge.slug, title=challenge.title,
                                   description=challenge.description, created_at=as_utc(challenge.created_at),
                                   demo=bool(challenge.demo), signup_open=bool(challenge.signup_open),
                                   terms=challenge.terms or "", max_team_size=challenge.max_team_size,
                                   tracks=[track_public(t, organizer=org) for t in tracks])


def create_challenge(*, session: Session, actor: Member, body: schemas.ChallengeCreate) -> Challenge:
    """Create a challenge with its tracks (organizers)."""
    if session.scalar(select(Challenge.id).where(Challenge.slug == body.slug)) is not None:
        raise ApiError(409, "conflict", f"a challenge with slug {body.slug!r} already exists; choose another slug")
    challenge = Challenge(slug=body.slug, title=body.title, description=body.description, demo=body.demo,
                          signup_open=body.signup_open, terms=body.terms.strip(), max_team_size=body.max_team_size)
    session.add(challenge)
    try:
        session.flush()
        for t in body.tracks:
            data = t.model_dump()
            data["title"] = data["title"] or t.slug
            session.add(Track(challenge_id=challenge.id, **data))
        session.flush()
    except IntegrityError:
        session.rollback()
        raise ApiError(409, "conflict", f"a challenge with slug {body.slug!r} already exists; choose another slug") from None
    record(session, actor=actor, action="challenge.create", target_type="challenge", target_id=challenge.id,
           slug=body.slug, tracks=[t.slug for t in body.tracks])
    session.commit()
    session.refresh(challenge)
    return challenge


def list_challenges(*, session: Session) -> list[Challenge]:
    """All challenges, newest first."""
    return list(session.scalars(select(Challenge).options(selectinload(Challenge.tracks)).order_by(Challenge.id.desc())))


def get_challenge(*, session: Session, slug: str) -> Challenge:
    """The challenge ``slug`` or 404."""
    challenge = session.scalar(select(Challenge).where(Challenge.slug == slug).options(selectinload(Challenge.tracks)))
    if challenge is None:
        raise ApiError(404, "not_found", f"challenge {slug!r} does not exist; GET /api/challenges lists them")
    return challenge


def get_track(*, session: Session, challenge: str, track: str, for_update: bool = False,
              viewer: Member | None = None, check_visible: bool = False) -> Track:
    """The track ``challenge/track`` or 404 (with ``check_visible``: also 404, the same answer, when the
    track is hidden and ``viewer`` is not an organizer)."""
    stmt = select(Track).join(Challenge).where(Challenge.slug == challenge, Track.slug == track)
    row = session.scalar(stmt)
    if row is not None and check_visible and not track_visible(row, viewer):
        row = None
    if row is None:
        get_challenge(session=session, slug=challenge)
        raise ApiError(404, "not_found",
                       f"challenge {challenge!r} has no track {track!r}; GET /api/challenges/{challenge} lists them")
    return row


def update_track(*, session: Session, actor: Member, challenge: str, track: str, body: schemas.TrackUpdate) -> Track:
    """Change any of a track's settings (organizers)."""
    row = get_track(session=session, challenge=challenge, track=track)
    changes = body.model_dump(exclude_unset=True)
    for name, value in changes.items():
        if value is None and name not in _NULLABLE:
            raise ApiError(422, "invalid_request", f"{name}: may not be null; leave it out to keep the current value")
    merged = {name: getattr(row, name) for name in schemas.TrackUpdate.model_fields}
    merged.update(changes)
    merged["opens_at"], merged["closes_at"] = as_utc(merged["opens_at"]), as_utc(merged["closes_at"])
    try:
        schemas._check_track(merged)
        if "testset" in changes:
            schemas.refuse_public_testset(changes["testset"], demo=bool(row.challenge.demo), track=row.slug)
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    before = {}
    for name, value in changes.items():
        before[name] = getattr(row, name)
        setattr(row, name, value)
    if "visibility" in changes:
        _apply_freeze(row, changes["visibility"])
    record(session, actor=actor, action="track.update", target_type="track", target_id=row.id,
           changes={k: _jsonable(v) for k, v in changes.items()}, before={k: _jsonable(v) for k, v in before.items()})
    session.commit()
    session.refresh(row)
    return row


def _apply_freeze(row: Track, visibility: Visibility) -> None:
    if visibility == Visibility.frozen:
        if row.frozen_at is None:
            row.frozen_at = utcnow()
    else:
        row.frozen_at = None


def set_visibility(*, session: Session, actor: Member, challenge: str, track: str, visibility: Visibility) -> Track:
    """Publish, hide or freeze a track's leaderboard (organizers). Freezing records the moment."""
    row = get_track(session=session, challenge=challenge, track=track)
    before = row.visibility
    row.visibility = visibility
    _apply_freeze(row, visibility)
    record(session, actor=actor, action="track.visibility", target_type="track", target_id=row.id,
           before=before.value, after=visibility.value)
    session.commit()
    session.refresh(row)
    return row


def _jsonable(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "value"):
        return value.value
    return value
