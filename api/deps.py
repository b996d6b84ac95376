"""FastAPI dependencies: DB session, settings, and who is calling (``Authorization: Bearer <token>``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.auth.tokens import (
    MAX_TOKEN_DEPTH,
    authenticate_token,
    bearer_token,
    hash_token,
    new_token,
    refuse_worker,
    resolve_caller,
    token_chain_revoked,
)
from api.db import get_sessionmaker
from api.errors import ApiError
from api.models import Member, Role
from api.settings import Settings, get_settings

__all__ = ["SessionDep", "SettingsDep", "OptionalMember", "CurrentMember", "OrganizerDep",
           # the credential primitives live in api.auth.tokens; re-exported here for existing importers
           "hash_token", "new_token", "authenticate_token", "token_chain_revoked", "MAX_TOKEN_DEPTH", "refuse_worker"]


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


def _optional_member(request: Request, session: SessionDep) -> Member | None:
    """The caller of an API route (:func:`api.auth.tokens.resolve_caller` on the Bearer header), or None."""
    caller = resolve_caller(session, token=bearer_token(request.headers.get("authorization")))
    if caller.member is None:
        return None
    request.state.token_id = caller.token_id  # the calling token: tokens it mints for its own member are its children
    session.commit()  # the request then holds no DB connection while it runs
    return caller.member


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
