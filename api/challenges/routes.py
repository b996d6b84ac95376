"""Routes: challenges and tracks (public reads, organizer writes)."""

from __future__ import annotations

from fastapi import APIRouter

from api.challenges import schemas, service
from api.deps import OptionalMember, OrganizerDep, SessionDep, SettingsDep
from api.params import SlugPath, as_utc
from api.queue import check_track_queue

router = APIRouter(prefix="/api/challenges", tags=["challenges"])


@router.get("", response_model=list[schemas.ChallengeSummary], summary="All challenges")
def list_challenges(session: SessionDep, member: OptionalMember):
    return [schemas.ChallengeSummary(id=c.id, slug=c.slug, title=c.title, description=c.description,
                                     created_at=as_utc(c.created_at),
                                     tracks=[t.slug for t in c.tracks if service.track_visible(t, member)])
            for c in service.list_challenges(session=session)]


@router.post("", status_code=201, response_model=schemas.ChallengePublic,
             summary="Create a challenge with its tracks (organizers)")
def create_challenge(body: schemas.ChallengeCreate, organizer: OrganizerDep, session: SessionDep, settings: SettingsDep):
    for t in body.tracks:
        check_track_queue(settings, t.queue, t.gpus)
    return service.challenge_public(service.create_challenge(session=session, actor=organizer, body=body), organizer)


@router.get("/{challenge}", response_model=schemas.ChallengePublic, summary="A challenge and its tracks")
def get_challenge(challenge: SlugPath, session: SessionDep, member: OptionalMember):
    return service.challenge_public(service.get_challenge(session=session, slug=challenge), member)


@router.get("/{challenge}/tracks/{track}", response_model=schemas.TrackPublic, summary="A track's rules and resource profile")
def get_track(challenge: SlugPath, track: SlugPath, session: SessionDep, member: OptionalMember):
    return service.track_public(service.get_track(session=session, challenge=challenge, track=track, viewer=member,
                                                  check_visible=True), member)


@router.patch("/{challenge}/tracks/{track}", response_model=schemas.TrackPublic, summary="Change a track's settings (organizers)")
def update_track(challenge: SlugPath, track: SlugPath, body: schemas.TrackUpdate, organizer: OrganizerDep, session: SessionDep,
                 settings: SettingsDep):
    if body.queue is not None:
        gpus = body.gpus if body.gpus is not None else service.get_track(session=session, challenge=challenge, track=track).gpus
        check_track_queue(settings, body.queue, gpus)
    return service.track_public(service.update_track(session=session, actor=organizer, challenge=challenge,
                                                     track=track, body=body), organizer)


@router.post("/{challenge}/tracks/{track}/visibility", response_model=schemas.TrackPublic,
             summary="Publish, hide or freeze a track's leaderboard (organizers)")
def set_visibility(challenge: SlugPath, track: SlugPath, body: schemas.VisibilityChange, organizer: OrganizerDep,
                   session: SessionDep):
    return service.track_public(service.set_visibility(session=session, actor=organizer, challenge=challenge, track=track,
                                                       visibility=body.visibility), organizer)
