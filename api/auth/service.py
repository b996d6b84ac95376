"""Teams, members and API tokens (random, shown once, only a SHA-256 stored)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.audit import record
from api.deps import hash_token, new_token
from api.errors import ApiError
from api.models import ApiToken, Member, Role, Team, utcnow

__all__ = ["create_team", "list_teams", "add_member", "issue_token", "revoke_token", "get_member_visible"]


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


def _issue(session: Session, member: Member, label: str) -> tuple[ApiToken, str]:
    token = new_token()
    row = ApiToken(member_id=member.id, token_hash=hash_token(token), prefix=token[:8], label=label)
    session.add(row)
    session.flush()
    return row, token


def add_member(*, session: Session, actor: Member, team_id: int, name: str, email: str, role: Role) -> tuple[Member, ApiToken, str]:
    """Add a member to a team and give it a first token (organizers)."""
    team = session.get(Team, team_id)
    if team is None:
        raise ApiError(404, "not_found", f"team {team_id} does not exist")
    member = Member(team_id=team.id, name=name.strip() or "member", email=email.strip(), role=role)
    session.add(member)
    session.flush()
    row, token = _issue(session, member, "initial")
    record(session, actor=actor, action="member.create", target_type="member", target_id=member.id,
           team_id=team.id, role=role.value)
    session.commit()
    return member, row, token


def get_member_visible(*, session: Session, actor: Member, member_id: int) -> Member:
    """The member, if ``actor`` may manage it (organizers: anyone; others: themselves) — else 404."""
    member = session.get(Member, member_id)
    if member is None or (actor.role != Role.organizer and member.id != actor.id):
        raise ApiError(404, "not_found", f"member {member_id} does not exist or is not yours")
    return member


def issue_token(*, session: Session, actor: Member, member_id: int, label: str = "") -> tuple[ApiToken, str]:
    """A new token for a member (organizers, or the member itself)."""
    member = get_member_visible(session=session, actor=actor, member_id=member_id)
    row, token = _issue(session, member, label)
    record(session, actor=actor, action="token.create", target_type="member", target_id=member.id, token_id=row.id)
    session.commit()
    return row, token


def revoke_token(*, session: Session, actor: Member, token_id: int) -> ApiToken:
    """Revoke a token (organizers, or the token's own member); revoking twice is harmless."""
    row = session.get(ApiToken, token_id)
    if row is None or (actor.role != Role.organizer and row.member_id != actor.id):
        raise ApiError(404, "not_found", f"token {token_id} does not exist or is not yours")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        record(session, actor=actor, action="token.revoke", target_type="token", target_id=row.id, member_id=row.member_id)
        session.commit()
    return row
