"""Routes: who am I, teams, members, tokens."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.auth import schemas, service
from api.deps import CurrentMember, OrganizerDep, SessionDep
from api.models import ApiToken
from api.params import IdPath

router = APIRouter(prefix="/api", tags=["auth"])


@router.get("/me", response_model=schemas.Me, summary="The member behind the token, with its team")
def me(request: Request, member: CurrentMember, session: SessionDep) -> schemas.Me:
    token_id = getattr(request.state, "token_id", None)  # set by the CurrentMember dependency (the calling token)
    row = session.get(ApiToken, token_id) if token_id is not None else None
    return schemas.Me(
        member=schemas.MemberPublic.model_validate(member),
        team=schemas.TeamPublic.model_validate(member.team) if member.team else None,
        token=schemas.TokenPublic.model_validate(row) if row else None,
    )


@router.post("/teams", status_code=201, response_model=schemas.TeamPublic, summary="Create a team (organizers)")
def create_team(body: schemas.TeamCreate, organizer: OrganizerDep, session: SessionDep):
    return service.create_team(session=session, actor=organizer, name=body.name, affiliation=body.affiliation)


@router.get("/teams", response_model=list[schemas.TeamPublic], summary="All teams (organizers)")
def list_teams(organizer: OrganizerDep, session: SessionDep):
    return service.list_teams(session=session)


@router.post("/teams/{team_id}/members", status_code=201, response_model=schemas.MemberCreated,
             summary="Add a member to a team; its token is shown once (organizers)")
def add_member(team_id: IdPath, body: schemas.MemberCreate, organizer: OrganizerDep, session: SessionDep, request: Request):
    member, row, token = service.add_member(session=session, actor=organizer, team_id=team_id, name=body.name,
                                            email=body.email, role=body.role,
                                            by_token_id=getattr(request.state, "token_id", None))
    return schemas.MemberCreated(member=schemas.MemberPublic.model_validate(member), token=token, token_id=row.id)


@router.post("/members/{member_id}/tokens", status_code=201, response_model=schemas.TokenCreated,
             summary="A new API token for a member, shown once (organizers, or the member itself); "
                     "a token minted for yourself dies when the minting token is revoked")
def issue_token(member_id: IdPath, member: CurrentMember, session: SessionDep, request: Request,
                body: schemas.TokenCreate | None = None):
    row, token = service.issue_token(session=session, actor=member, member_id=member_id, label=body.label if body else "",
                                     by_token_id=getattr(request.state, "token_id", None))
    return schemas.TokenCreated(**schemas.TokenPublic.model_validate(row).model_dump(), token=token)


@router.post("/tokens/{token_id}/revoke", response_model=schemas.TokenPublic,
             summary="Revoke an API token (organizers, or the token's member), the tokens it minted and its web sessions")
def revoke_token(token_id: IdPath, member: CurrentMember, session: SessionDep):
    return service.revoke_token(session=session, actor=member, token_id=token_id)[0]
