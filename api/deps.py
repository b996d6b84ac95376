"""FastAPI dependencies: DB session, settings, and who is calling (``Authorization: Bearer <token>``)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db import get_sessionmaker
from api.errors import ApiError
from api.models import ApiToken, Member, Role, utcnow
from api.settings import Settings, get_settings

__all__ = ["SessionDep", "SettingsDep", "OptionalMember", "CurrentMember", "OrganizerDep",
           "hash_token", "new_token", "authenticate_token", "token_chain_revoked", "MAX_TOKEN_DEPTH", "refuse_worker"]

TOKEN_PREFIX = "sa_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random API token (shown once; store only ``hash_token(token)``)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _settings(request: Request) -> Settings:
    return getattr(request.app.state, "settings", None) or get_settings()


SettingsDep = Annotated[Settings, Depends(_settings)]


def _session(settings: SettingsDep) -> Iterator[Session]:
    session = get_sessionmaker(settings.database_url)()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(_session)]


MAX_TOKEN_DEPTH = 64  # a longer parent chain (or a cycle) is refused rather than walked


def token_chain_revoked(session: Session, row: ApiToken) -> bool:
    """True when ``row`` or any token that minted it (``parent_id``, transitively) is revoked.

    Revocation cascades to descendants when it happens (:func:`api.auth.service.revoke_token`); this check
    also refuses a child minted concurrently with its parent's revocation, or a parent revoked in the DB."""
    seen: set[int] = set()
    cur: ApiToken | None = row
    while cur is not None:
        if cur.revoked_at is not None or cur.id in seen or len(seen) >= MAX_TOKEN_DEPTH:
            return True
        seen.add(cur.id)
        cur = session.get(ApiToken, cur.parent_id) if cur.parent_id is not None else None
    return False


def authenticate_token(session: Session, token: str | None, *, touch: bool = True) -> ApiToken | None:
    """The valid token row for a raw API token, or None (unknown, revoked, or minted by a revoked token).

    The one token check of SegArena: the API's Bearer header and the organizer pages' sign-in and web
    sessions all go through it. ``touch`` records the use (at most one write a minute per token)."""
    token = (token or "").strip()
    if not token:
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    return _valid(session, row, touch=touch)


def _valid(session: Session, row: ApiToken | None, *, touch: bool) -> ApiToken | None:
    if row is None or token_chain_revoked(session, row):
        return None
    if touch:
        now = utcnow()
        last = row.last_used_at
        if last is None or (now - (last if last.tzinfo else last.replace(tzinfo=now.tzinfo))).total_seconds() > 60:
            row.last_used_at = now
    return row


def _optional_member(request: Request, session: SessionDep) -> Member | None:
    header = request.headers.get("authorization", "")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "send your API token as 'Authorization: Bearer <token>'")
    row = authenticate_token(session, token)
    if row is None:
        raise ApiError(401, "unauthorized", "this API token is unknown or revoked; ask your team or the organizers for a new one")
    member = row.member  # loaded before the commit: the request then holds no DB connection while it runs
    refuse_worker(member)
    request.state.token_id = row.id  # the calling token: tokens it mints for its own member are its children
    session.commit()
    return member


def refuse_worker(member: Member | None) -> None:
    """A worker token (an execution host) reaches only /api/worker/ routes: 403 everywhere else."""
    if member is not None and member.role == Role.worker:
        raise ApiError(403, "forbidden", "a worker token reaches only the /api/worker/ routes (execution hosts); use a "
                       "participant or organizer token here")


OptionalMember = Annotated[Member | None, Depends(_optional_member)]


def _current_member(member: OptionalMember) -> Member:
    if member is None:
        raise ApiError(401, "unauthorized", "this needs an API token: send 'Authorization: Bearer <token>'")
    return member


CurrentMember = Annotated[Member, Depends(_current_member)]


def _organizer(member: CurrentMember) -> Member:
    if member.role != Role.organizer:
        raise ApiError(403, "forbidden", "only organizers may do this")
    return member


OrganizerDep = Annotated[Member, Depends(_organizer)]
