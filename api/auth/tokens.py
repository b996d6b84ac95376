"""Credentials: API tokens, web sessions, and the one function that turns a request's credentials into a member.

:func:`resolve_caller` is the only place a credential is checked. The API's dependencies (``Authorization: Bearer``,
:mod:`api.deps`), the pages (Bearer or the ``segarena_session`` cookie, :mod:`leaderboard_web`) and the worker routes
(Bearer, worker tokens only, :mod:`api.execution.routes`) all call it, so a revoked token, a token minted by a
revoked token, an expired web session and a worker token are refused the same way everywhere.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.models import ApiToken, Member, Role, WebSession, utcnow
from api.params import as_utc

__all__ = ["TOKEN_PREFIX", "MAX_TOKEN_DEPTH", "BEARER_HINT", "hash_token", "new_token", "token_row", "token_chain_revoked",
           "authenticate_token", "session_hash", "web_session", "bearer_token", "refuse_worker", "Caller",
           "resolve_caller"]

log = logging.getLogger(__name__)

TOKEN_PREFIX = "sa_"
MAX_TOKEN_DEPTH = 64  # a longer parent chain (or a cycle) is refused rather than walked
BEARER_HINT = "send your API token as 'Authorization: Bearer <token>'"
_UNKNOWN = "this API token is unknown or revoked; ask your team or the organizers for a new one"
_UNKNOWN_WORKER = "this worker token is unknown or revoked; ask the organizers for a new one"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random API token (shown once; store only ``hash_token(token)``)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


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


def token_row(session: Session, token: str) -> ApiToken | None:
    """The row of a raw API token, revoked or not (for "does it exist"; to authenticate, :func:`resolve_caller`)."""
    return session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))


def authenticate_token(session: Session, token: str | None, *, touch: bool = True) -> ApiToken | None:
    """The valid token row for a raw API token, or None (unknown, revoked, or minted by a revoked token).
    ``touch`` records the use (at most one write a minute per token)."""
    token = (token or "").strip()
    if not token:
        return None
    row = token_row(session, token)
    if row is None or token_chain_revoked(session, row):
        return None
    if touch:
        now = utcnow()
        last = as_utc(row.last_used_at)
        if last is None or (now - last).total_seconds() > 60:
            row.last_used_at = now
    return row


def session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def web_session(session: Session, session_id: str | None) -> WebSession | None:
    """The live web session of a cookie value: not ended, not expired, its token (and ancestors) not revoked."""
    if not session_id or len(session_id) > 256:
        return None
    ws = session.scalar(select(WebSession).where(WebSession.session_hash == session_hash(session_id)))
    if ws is None or ws.revoked_at is not None or as_utc(ws.expires_at) <= utcnow() or ws.token_id is None:
        return None
    tok = session.get(ApiToken, ws.token_id)
    if tok is None or tok.member_id != ws.member_id or token_chain_revoked(session, tok):
        return None
    return ws


def bearer_token(header: str | None, *, hint: str = BEARER_HINT) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None without the header; 401 when malformed."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", hint)
    return token.strip()


def refuse_worker(member: Member | None) -> None:
    """A worker token (an execution host) reaches only /api/worker/ routes: 403 everywhere else."""
    if member is not None and member.role == Role.worker:
        raise ApiError(403, "forbidden", "a worker token reaches only the /api/worker/ routes (execution hosts); use a "
                       "participant or organizer token here")


@dataclass(frozen=True)
class Caller:
    """Who is calling: nobody (``member`` None), a token's member, or a web session's member."""

    member: Member | None = None
    token_id: int | None = None  # the API token used (directly, or the one the web session was signed in with)
    web_session: WebSession | None = None


def resolve_caller(session: Session, *, token: str | None = None, session_id: str | None = None,
                   touch: bool = True, audience: Literal["user", "worker"] = "user") -> Caller:
    """The one credential check of SegArena.

    - ``token`` (from :func:`bearer_token`): it must be valid (not revoked, nor any token that minted it), else
      401. For ``audience="user"`` (the API and the pages) a worker token is refused (403); for ``"worker"`` (the
      worker routes) only a worker token is accepted (403 otherwise).
    - Else ``session_id`` (the pages' cookie): a live web session gives its member; a stale, ended or unknown one
      gives nobody (the page is shown as to the public).
    - Else nobody.
    """
    if token:
        row = authenticate_token(session, token, touch=touch)
        if row is None:
            raise ApiError(401, "unauthorized", _UNKNOWN_WORKER if audience == "worker" else _UNKNOWN)
        member = row.member  # loaded now: the caller may commit and release the connection before using it
        if audience == "worker":
            if member.role != Role.worker:
                raise ApiError(403, "forbidden", "worker routes take a worker token only; participant and organizer "
                               "tokens cannot use them (an organizer creates worker tokens: segarena admin worker create)")
        else:
            refuse_worker(member)
        return Caller(member=member, token_id=row.id)
    if session_id and audience == "user":
        ws = web_session(session, session_id)
        holder = session.get(Member, ws.member_id) if ws is not None else None
        if holder is not None and holder.role != Role.worker:
            return Caller(member=holder, token_id=ws.token_id if ws else None, web_session=ws)
    return Caller()
