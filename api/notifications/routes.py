"""Routes: organizers' webhooks and delivery log per challenge; a member's own notification preferences."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from api.deps import CurrentMember, OrganizerDep, SessionDep, SettingsDep
from api.params import MAX_ID, IdPath, SlugPath

from api.models import NotificationDelivery

from . import service
from .service import DeliveryPublic, Preferences, PreferencesUpdate, WebhookCreate, WebhookCreated, WebhookPublic

router = APIRouter(tags=["notifications"])


@router.post("/api/admin/challenges/{challenge}/webhooks", status_code=201, response_model=WebhookCreated,
             summary="Add a webhook to a challenge; the answer holds its signing secret, shown this once")
def add_webhook(challenge: SlugPath, body: WebhookCreate, organizer: OrganizerDep, session: SessionDep,
                settings: SettingsDep) -> dict[str, Any]:
    return service.add_webhook(session=session, settings=settings, actor=organizer, challenge=challenge, body=body)


@router.get("/api/admin/challenges/{challenge}/webhooks", response_model=list[WebhookPublic],
            summary="A challenge's webhooks (never their secrets)")
def list_webhooks(challenge: SlugPath, organizer: OrganizerDep, session: SessionDep,
                  removed: Annotated[bool, Query(description="Also removed ones.")] = False) -> list[dict[str, Any]]:
    return service.list_webhooks(session=session, challenge=challenge, removed=removed)


@router.delete("/api/admin/challenges/{challenge}/webhooks/{webhook_id}", response_model=WebhookPublic,
               summary="Remove a webhook: nothing more is sent to it (its pending deliveries are cancelled; "
                       "its delivery log stays)")
def remove_webhook(challenge: SlugPath, webhook_id: IdPath, organizer: OrganizerDep, session: SessionDep) -> dict[str, Any]:
    return service.remove_webhook(session=session, actor=organizer, challenge=challenge, webhook_id=webhook_id)


@router.get("/api/admin/challenges/{challenge}/deliveries", response_model=list[DeliveryPublic],
            summary="The delivery log of a challenge's notifications (webhooks and e-mail), newest first, "
                    "with every attempt")
def list_deliveries(challenge: SlugPath, organizer: OrganizerDep, session: SessionDep,
                    channel: Annotated[Literal["webhook", "email"] | None, Query()] = None,
                    webhook_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
                    state: Annotated[Literal["pending", "delivered", "failed", "cancelled"] | None, Query()] = None,
                    kind: Annotated[Literal["run.finished", "run.failed", "run.stuck", "submission.excluded",
                                                  "budget.warning"] | None,
                                    Query()] = None,
                    before_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[NotificationDelivery]:
    return service.list_deliveries(session=session, challenge=challenge, channel=channel, webhook_id=webhook_id,
                                   state=state, kind=kind, before_id=before_id, limit=limit)


@router.get("/api/me/notifications", response_model=Preferences,
            summary="My notification settings: e-mail address and whether e-mail notifications are on")
def my_preferences(member: CurrentMember, settings: SettingsDep) -> Preferences:
    return service.preferences(settings, member)


@router.put("/api/me/notifications", response_model=Preferences,
            summary="Turn my e-mail notifications on or off, or change my address")
def set_my_preferences(body: PreferencesUpdate, member: CurrentMember, session: SessionDep, settings: SettingsDep) -> Preferences:
    return service.set_preferences(session=session, settings=settings, member=member, body=body)
