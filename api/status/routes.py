"""``GET /api/status``: the declared queues, their workers and waits (public; hosts for organizers only)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import OptionalMember, SessionDep, SettingsDep
from api.models import Role
from api.status import schemas, service

router = APIRouter(prefix="/api", tags=["status"])


@router.get("/status", response_model=schemas.StatusPublic,
            summary="Queues: length, runs in progress, workers online, median wait; warnings for unserved tracks")
def get_status(member: OptionalMember, session: SessionDep, settings: SettingsDep):
    organizer = member is not None and member.role == Role.organizer
    return service.queue_status(session, settings, organizer=organizer)
