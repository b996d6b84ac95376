"""Routes: sign-up (anonymous, rate-limited), the one-time claim, organizer decisions, join codes, terms, quotas."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from api.deps import CurrentMember, OptionalMember, OrganizerDep, SessionDep, SettingsDep
from api.errors import ApiError
from api.models import SignupState
from api.params import IdPath, SlugPath
from api.participants import schemas, service
from api.participants.ratelimit import claim_limiter, client_address

router = APIRouter(prefix="/api", tags=["participants"])


@router.post("/challenges/{challenge}/signups", status_code=201, response_model=schemas.SignupCreated,
             summary="Ask to take part (anonymous, rate-limited per address): a new team or a join code; the "
                     "answer holds the one-time claim code")
def create_signup(challenge: SlugPath, body: schemas.SignupCreate, request: Request, session: SessionDep,
                  settings: SettingsDep, _caller: OptionalMember):  # _caller: a worker token is refused (403)
    return service.register(session=session, settings=settings, challenge=challenge, body=body,
                            client=client_address(request, settings))


@router.post("/signups/claim", response_model=schemas.ClaimResult,
             summary="A sign-up request's state by its claim code; the first claim after approval returns the API "
                     "token, once (anonymous, rate-limited per address)")
def claim_signup(body: schemas.ClaimRequest, request: Request, session: SessionDep, settings: SettingsDep,
                 _caller: OptionalMember):  # _caller: a worker token is refused (403)
    address = client_address(request, settings)
    wait = claim_limiter(request).hit(address)
    if wait is not None:
        raise ApiError(429, "rate_limited", f"too many claim look-ups from your address; try again in {wait:.0f} s",
                       retry_after_s=round(wait))
    return service.claim(session=session, settings=settings, code=body.claim_code)


@router.get("/challenges/{challenge}/participation", response_model=schemas.Participation,
            summary="Whether sign-up is open, whether terms must be accepted, the team-size limit")
def get_participation(challenge: SlugPath, session: SessionDep, _caller: OptionalMember):  # no worker tokens
    from api.challenges.service import get_challenge

    return service.participation(get_challenge(session=session, slug=challenge))


@router.patch("/challenges/{challenge}/participation", response_model=schemas.Participation,
              summary="Open or close sign-up, set the terms and the team-size limit (organizers)")
def update_participation(challenge: SlugPath, body: schemas.ParticipationUpdate, organizer: OrganizerDep,
                         session: SessionDep):
    return service.participation(service.update_participation(session=session, actor=organizer, challenge=challenge,
                                                              body=body))


@router.get("/challenges/{challenge}/terms", response_model=schemas.TermsPublic,
            summary="A challenge's terms (and, signed in, whether you accepted them as they read now)")
def get_terms(challenge: SlugPath, session: SessionDep, member: OptionalMember):
    return service.terms_for(session=session, challenge=challenge, member=member)


@router.post("/challenges/{challenge}/terms/accept", response_model=schemas.TermsAccepted,
             summary="Accept a challenge's terms (needed before your first submission when it has terms)")
def accept_terms(challenge: SlugPath, member: CurrentMember, session: SessionDep,
                 body: schemas.TermsAccept | None = None):
    return service.accept_terms(session=session, member=member, challenge=challenge,
                                sha256=body.sha256 if body else None)


@router.get("/me/team/join-code", response_model=schemas.JoinCode, summary="Your team's join code")
def get_join_code(member: CurrentMember, session: SessionDep):
    return service.join_code(session=session, member=member)


@router.post("/me/team/join-code/rotate", response_model=schemas.JoinCode,
             summary="Replace your team's join code (the old one stops working)")
def rotate_join_code(member: CurrentMember, session: SessionDep):
    return service.join_code(session=session, member=member, rotate=True)


@router.get("/me/participation", response_model=schemas.MyParticipation,
            summary="Your team, the terms you accepted, and per track the quota left and when the next slot frees")
def my_participation(member: CurrentMember, session: SessionDep, settings: SettingsDep,
                     challenge: Annotated[str | None, Query(max_length=64)] = None):
    return service.my_participation(session=session, settings=settings, member=member, challenge=challenge)


@router.get("/admin/signups", response_model=list[schemas.SignupOrganizerView],
            summary="Sign-up requests, oldest first (organizers)")
def list_signups(organizer: OrganizerDep, session: SessionDep,
                 challenge: Annotated[str | None, Query(max_length=64)] = None, state: SignupState | None = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 200):
    return service.list_signups(session=session, challenge=challenge, state=state, limit=limit)


@router.post("/admin/signups/{signup_id}/approve", response_model=schemas.SignupOrganizerView,
             summary="Approve a sign-up request: the member (and a new team) are created; the requester claims the "
                     "token (organizers)")
def approve_signup(signup_id: IdPath, organizer: OrganizerDep, session: SessionDep, settings: SettingsDep):
    return service.approve(session=session, settings=settings, actor=organizer, signup_id=signup_id)


@router.post("/admin/signups/{signup_id}/refuse", response_model=schemas.SignupOrganizerView,
             summary="Refuse a sign-up request with a reason the requester reads (organizers)")
def refuse_signup(signup_id: IdPath, body: schemas.SignupRefuse, organizer: OrganizerDep, session: SessionDep):
    return service.refuse(session=session, actor=organizer, signup_id=signup_id, reason=body.reason)
