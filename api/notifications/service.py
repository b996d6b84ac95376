"""Organizer webhooks of a challenge, the delivery log, and a member's notification preferences."""

from __future__ import annotations

import re
import secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from api.audit import record
from api.errors import ApiError
from api.models import Challenge, Member, NotificationDelivery, Webhook, utcnow
from api.params import UtcOut

from .events import KINDS
from .transport import check_url

__all__ = ["WebhookCreate", "WebhookPublic", "WebhookCreated", "DeliveryPublic", "Preferences", "PreferencesUpdate",
           "add_webhook", "list_webhooks", "remove_webhook", "list_deliveries", "preferences", "set_preferences"]

Kind = Literal["run.finished", "run.failed", "run.stuck", "submission.excluded", "budget.warning"]
MAX_WEBHOOKS_PER_CHALLENGE = 20
_EMAIL = re.compile(r"^[^@\s<>()\[\],;:\"\\]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, max_length=2000, description="http(s) URL the signed POSTs go to.")
    events: list[Kind] = Field(default_factory=list, max_length=len(KINDS),
                               description="Event kinds to send; empty: all of them.")
    description: str = Field(default="", max_length=200)


class WebhookPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    challenge: str
    url: str
    events: list[str]
    description: str
    created_by: str
    created_at: UtcOut
    removed_at: UtcOut | None


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="Signs every body (HMAC-SHA256); shown once, now. Store it with the receiver.")


class DeliveryPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    event_id: int
    kind: str
    channel: str
    webhook_id: int | None
    member_id: int | None
    recipient: str
    state: str
    attempts: int
    next_attempt_at: UtcOut | None
    last_status: int | None
    last_error: str
    created_at: UtcOut
    delivered_at: UtcOut | None
    log: list[dict[str, Any]]
    payload: dict[str, Any]


class Preferences(BaseModel):
    email: str = Field(description="Where e-mail notifications go (empty: none are sent).")
    email_notifications: bool = Field(description="False: this member opted out of e-mail notifications.")
    smtp_configured: bool = Field(description="Whether this server sends e-mail at all (SEGARENA_SMTP_HOST).")
    kinds: list[str] = Field(description="What notifies: run finished, failed, stuck (requeued), submission excluded.")


class PreferencesUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email_notifications: bool | None = None
    email: str | None = Field(default=None, max_length=200, description="A new address ('' removes it).")


def _challenge(session: Session, slug: str) -> Challenge:
    row = session.scalar(select(Challenge).where(Challenge.slug == slug))
    if row is None:
        raise ApiError(404, "not_found", f"challenge {slug!r} does not exist; GET /api/challenges lists them")
    return row


def _public(hook: Webhook, slug: str) -> dict[str, Any]:
    return {"id": hook.id, "challenge": slug, "url": hook.url, "events": list(hook.events or []) or list(KINDS),
            "description": hook.description, "created_by": hook.created_by, "created_at": hook.created_at,
            "removed_at": hook.removed_at}


def add_webhook(*, session: Session, settings: Any, actor: Member, challenge: str, body: WebhookCreate) -> dict[str, Any]:
    ch = _challenge(session, challenge)
    url = body.url.strip()
    try:  # no DNS lookup in the request: names are resolved and checked at every delivery attempt
        check_url(url, allow_private=bool(settings.webhook_allow_private))
    except ValueError as exc:
        raise ApiError(422, "invalid_webhook_url", f"webhook URL refused: {exc}") from None
    active = session.scalars(select(Webhook.id).where(Webhook.challenge_id == ch.id, Webhook.removed_at.is_(None))).all()
    if len(active) >= MAX_WEBHOOKS_PER_CHALLENGE:
        raise ApiError(409, "too_many_webhooks", f"challenge {challenge!r} has {len(active)} webhooks, the most "
                       "allowed; remove one first (segarena admin webhook remove ID)")
    secret = "whsec_" + secrets.token_urlsafe(32)
    events = list(dict.fromkeys(body.events))
    hook = Webhook(challenge_id=ch.id, url=url, secret=secret, events=events if len(events) < len(KINDS) else [],
                   description=body.description.strip(), created_by=f"{actor.name}#{actor.id}"[:200])
    session.add(hook)
    session.flush()
    record(session, actor=actor, action="webhook.create", target_type="challenge", target_id=ch.id, webhook_id=hook.id,
           url=url, events=events or list(KINDS))  # never the secret
    session.commit()
    session.refresh(hook)
    return {**_public(hook, ch.slug), "secret": secret}


def list_webhooks(*, session: Session, challenge: str, removed: bool = False) -> list[dict[str, Any]]:
    ch = _challenge(session, challenge)
    q = select(Webhook).where(Webhook.challenge_id == ch.id)
    if not removed:
        q = q.where(Webhook.removed_at.is_(None))
    return [_public(h, ch.slug) for h in session.scalars(q.order_by(Webhook.id))]


def remove_webhook(*, session: Session, actor: Member, challenge: str, webhook_id: int) -> dict[str, Any]:
    ch = _challenge(session, challenge)
    hook = session.get(Webhook, webhook_id)
    if hook is None or hook.challenge_id != ch.id or hook.removed_at is not None:
        raise ApiError(404, "not_found", f"challenge {challenge!r} has no webhook {webhook_id}; "
                       "segarena admin webhook list shows them")
    hook.removed_at = utcnow()
    cancelled = getattr(session.execute(update(NotificationDelivery)
                                .where(NotificationDelivery.webhook_id == hook.id, NotificationDelivery.state == "pending")
                                .values(state="cancelled", last_error="the webhook was removed")
                                .execution_options(synchronize_session=False)), "rowcount", 0)
    record(session, actor=actor, action="webhook.remove", target_type="challenge", target_id=ch.id, webhook_id=hook.id,
           url=hook.url, cancelled_deliveries=cancelled)
    session.commit()
    session.refresh(hook)
    return _public(hook, ch.slug)


def list_deliveries(*, session: Session, challenge: str, channel: str | None = None, webhook_id: int | None = None,
                    state: str | None = None, kind: str | None = None, before_id: int | None = None,
                    limit: int = 100) -> list[NotificationDelivery]:
    ch = _challenge(session, challenge)
    q = select(NotificationDelivery).where(NotificationDelivery.challenge_id == ch.id)
    for column, value in ((NotificationDelivery.channel, channel), (NotificationDelivery.webhook_id, webhook_id),
                          (NotificationDelivery.state, state), (NotificationDelivery.kind, kind)):
        if value is not None:
            q = q.where(column == value)
    if before_id is not None:
        q = q.where(NotificationDelivery.id < before_id)
    return list(session.scalars(q.order_by(NotificationDelivery.id.desc()).limit(limit)))


def preferences(settings: Any, member: Member) -> Preferences:
    return Preferences(email=member.email, email_notifications=bool(member.email_notifications),
                       smtp_configured=bool(settings.smtp_host), kinds=list(KINDS))


def set_preferences(*, session: Session, settings: Any, member: Member, body: PreferencesUpdate) -> Preferences:
    changes: dict[str, Any] = {}
    if body.email is not None:
        email = body.email.strip()
        if email and not _EMAIL.match(email):
            raise ApiError(422, "invalid_email", f"{email!r} is not an e-mail address (name@example.org); "
                           "send '' to remove the address")
        member.email = changes["email"] = email
    if body.email_notifications is not None:
        member.email_notifications = changes["email_notifications"] = body.email_notifications
    if changes:
        record(session, actor=member, action="member.notifications", target_type="member", target_id=member.id,
               **changes)
        session.commit()
        session.refresh(member)
    return preferences(settings, member)
