"""Teams, members and API tokens (random, shown once, only a SHA-256 stored)."""

from __future__ import annotations

import hmac
import logging
import secrets
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.audit import record
from api.db import affected_rows
from api.auth.tokens import (
    MAX_TOKEN_DEPTH,
    authenticate_token,
    hash_token,
    new_token,
    session_hash,
    token_chain_revoked,
    web_session,
)
from api.errors import ApiError
from api.models import ApiToken, Member, Role, Team, WebSession, utcnow

__all__ = ["create_team", "list_teams", "add_member", "issue_token", "revoke_token", "get_member_visible",
           "list_member_tokens", "start_web_session", "web_session", "end_web_session", "csrf_matches"]

log = logging.getLogger(__name__)


def create_team(*, session: Session, actor: Member, name: str, affiliation: str) -> Team:
    """Create a team (organizers)."""
    name = name.strip()
    if not name:
        raise ApiError(422, "invalid_request", "name: a team needs a non-empty name")
    if session.scalar(select(Team.id).where(Team.name == name)) is not None:
        raise ApiError(409, "conflict", f"a team named {name!r} already exists; choose another name")
    team = Team(name=name, affiliation=affiliation.strip())
    session.add(team)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise ApiError(409, "conflict", f"a team named {name!r} already exists; choose another name") from None
    record(session, actor=actor, action="team.create", target_type="team", target_id=team.id, name=name)
    session.commit()
    return team


def list_teams(*, session: Session) -> list[Team]:
    """All teams, oldest first."""
    return list(session.scalars(select(Team).order_by(Team.id)))


def _issue(session: Session, member: Member, label: str, parent_id: int | None = None) -> tuple[ApiToken, str]:
    token = new_token()
    row = ApiToken(member_id=member.id, token_hash=hash_token(token), prefix=token[:8], label=label, parent_id=parent_id)
    session.add(row)
    session.flush()
    return row, token


def add_member(*, session: Session, actor: Member, team_id: int, name: str, email: str, role: Role,
               by_token_id: int | None = None) -> tuple[Member, ApiToken, str]:
    """Add a member to a team and give it a first token (organizers)."""
    team = session.get(Team, team_id)
    if team is None:
        raise ApiError(404, "not_found", f"team {team_id} does not exist")
    member = Member(team_id=team.id, name=name.strip() or "member", email=email.strip(), role=role)
    session.add(member)
    session.flush()
    row, token = _issue(session, member, "initial")
    record(session, actor=actor, action="member.create", target_type="member", target_id=member.id,
           team_id=team.id, role=role.value, token_id=row.id, by_token_id=by_token_id)
    session.commit()
    return member, row, token


def get_member_visible(*, session: Session, actor: Member, member_id: int) -> Member:
    """The member, if ``actor`` may manage it (organizers: anyone; others: themselves) — else 404."""
    member = session.get(Member, member_id)
    if member is None or (actor.role != Role.organizer and member.id != actor.id):
        raise ApiError(404, "not_found", f"member {member_id} does not exist or is not yours")
    return member


def issue_token(*, session: Session, actor: Member, member_id: int, label: str = "",
                by_token_id: int | None = None) -> tuple[ApiToken, str]:
    """A new token for a member (organizers, or the member itself).

    Rule: a token a member mints for ITSELF is a child of the minting token (``parent_id``), so revoking
    the minting token revokes it too and a stolen token cannot leave a longer-lived one behind. A token an
    organizer mints for ANOTHER member is not a child (rotating the organizer's token must not sign a team
    out); its audit event names the minting token (``by_token_id``) and organizers list and revoke it with
    :func:`list_member_tokens` / :func:`revoke_token`."""
    member = get_member_visible(session=session, actor=actor, member_id=member_id)
    parent_id = by_token_id if member.id == actor.id else None
    if parent_id is not None:
        parent = session.get(ApiToken, parent_id)
        if parent is None or parent.member_id != actor.id or token_chain_revoked(session, parent):
            raise ApiError(401, "unauthorized",
                           "this API token is unknown or revoked; ask your team or the organizers for a new one")
        depth, cur = 1, parent
        while cur.parent_id is not None and depth < MAX_TOKEN_DEPTH:
            cur, depth = session.get_one(ApiToken, cur.parent_id), depth + 1
        if depth >= MAX_TOKEN_DEPTH - 1:
            raise ApiError(409, "conflict", f"this token descends from {depth} generations of tokens; "
                           "ask an organizer for a fresh token ('segarena admin token new MEMBER_ID') and mint from that")
    row, token = _issue(session, member, label, parent_id=parent_id)
    record(session, actor=actor, action="token.create", target_type="member", target_id=member.id, token_id=row.id,
           parent_id=parent_id, by_token_id=by_token_id)
    session.commit()
    return row, token


def _descendants(session: Session, root_id: int) -> list[int]:
    """Ids of every token minted (transitively) by ``root_id``, revoked or not."""
    out: list[int] = []
    frontier, seen = [root_id], {root_id}
    while frontier:
        kids = [i for i in session.scalars(select(ApiToken.id).where(ApiToken.parent_id.in_(frontier))) if i not in seen]
        seen.update(kids)
        out.extend(kids)
        frontier = kids
    return out


def revoke_token(*, session: Session, actor: Member, token_id: int, member_id: int | None = None) -> tuple[ApiToken, list[int]]:
    """Revoke a token (organizers, or the token's own member), every token it minted, and the web sessions
    signed in with any of them; returns (token, ids of the descendants revoked now). Revoking twice is harmless.
    With ``member_id``, the token must be that member's (404 otherwise)."""
    row = session.get(ApiToken, token_id)
    if row is None or (actor.role != Role.organizer and row.member_id != actor.id) or (
            member_id is not None and row.member_id != member_id):
        raise ApiError(404, "not_found", f"token {token_id} does not exist or is not yours")
    now = utcnow()
    ids = [row.id, *_descendants(session, row.id)]
    live = list(session.scalars(select(ApiToken).where(ApiToken.id.in_(ids), ApiToken.revoked_at.is_(None))))
    for tok in live:
        tok.revoked_at = now
    cascaded = sorted(tok.id for tok in live if tok.id != row.id)
    ended = affected_rows(session.execute(update(WebSession).where(WebSession.token_id.in_(ids),
                                                                   WebSession.revoked_at.is_(None))
                                          .values(revoked_at=now)))
    if live:
        record(session, actor=actor, action="token.revoke", target_type="token", target_id=row.id,
               member_id=row.member_id, cascaded=cascaded, web_sessions=ended)
    session.commit()
    return row, cascaded


def list_member_tokens(*, session: Session, member_id: int) -> list[ApiToken]:
    """Every token of a member, oldest first, revoked ones included (organizers)."""
    if session.get(Member, member_id) is None:
        raise ApiError(404, "not_found", f"member {member_id} does not exist")
    return list(session.scalars(select(ApiToken).where(ApiToken.member_id == member_id).order_by(ApiToken.id)))


# --------------------------------------------------------------------------- web sessions (organizer pages)


def start_web_session(*, session: Session, token: str, hours: float) -> tuple[WebSession, str] | None:
    """Sign a browser in with an API token: (row, session id for the cookie), or None if the token is not valid.

    The cookie holds only a random session id; the DB holds its SHA-256, a CSRF token and the API token's
    id, so the session dies with the token (or any token that minted it)."""
    row = authenticate_token(session, token)
    if row is None or row.member.role == Role.worker:  # a worker token signs no browser in
        return None
    sid = secrets.token_urlsafe(32)
    now = utcnow()
    # the table stays bounded: sessions past their expiry (ended or not) are deleted at each sign-in
    session.execute(delete(WebSession).where(WebSession.expires_at < now))
    ws = WebSession(session_hash=session_hash(sid), csrf_token=secrets.token_urlsafe(32), member_id=row.member_id,
                    token_id=row.id, created_at=now, expires_at=now + timedelta(hours=hours))
    session.add(ws)
    record(session, actor=row.member, action="web_session.start", target_type="member", target_id=row.member_id,
           token_id=row.id)
    session.commit()
    return ws, sid


def end_web_session(session: Session, ws: WebSession) -> None:
    """Sign out: the session row is revoked (the cookie value is then worthless)."""
    if ws.revoked_at is None:
        ws.revoked_at = utcnow()
        record(session, actor=session.get(Member, ws.member_id), action="web_session.end", target_type="member",
               target_id=ws.member_id)
    session.commit()


def csrf_matches(ws: WebSession, sent: str | None) -> bool:
    """Constant-time comparison of a form's CSRF field with the session's synchronizer token."""
    return bool(sent) and hmac.compare_digest(ws.csrf_token.encode(), str(sent).encode())
