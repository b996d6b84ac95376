"""The notification dispatcher: a transactional outbox over the audit log, run from the trusted scorer's beat.

One pass (:func:`dispatch`):

1. **Fan-out.** Audit events of the notifying actions (:data:`api.notifications.events.ACTIONS`) from the last
   ``SEGARENA_NOTIFY_LOOKBACK_H`` hours that have no :class:`~api.models.NotificationEvent` marker yet each get, in
   one transaction, their marker (primary key = the event id) and one :class:`~api.models.NotificationDelivery`
   per target: every active webhook of the event's challenge that subscribed to the kind, and (when SMTP is
   configured) every member of the submitting team with an e-mail address who did not opt out. Two dispatchers
   racing on an event: one commits, the other's insert hits the primary key / ``(event_id, target)`` unique
   constraint and rolls back, so an event gets its deliveries once.
2. **Delivery.** Due pending deliveries are claimed one by one with a conditional ``UPDATE`` (a fresh lease,
   ``lease_until``): of two dispatchers one wins, the other skips it. The attempt runs outside any transaction,
   bounded by ``SEGARENA_WEBHOOK_TIMEOUT_S`` / ``SEGARENA_SMTP_TIMEOUT_S``; its outcome is written under the lease.
   A failed attempt is retried after ``SEGARENA_NOTIFY_BACKOFF_S`` x 2^(n-1), capped at
   ``SEGARENA_NOTIFY_BACKOFF_MAX_S``, up to ``SEGARENA_NOTIFY_MAX_ATTEMPTS`` attempts, then marked ``failed``.
   A dispatcher that dies mid-attempt leaves a lease that expires; the delivery is then attempted again (a
   receiver may see one delivery twice in that case only: ``X-SegArena-Delivery`` identifies it).

In the scorer (``background=True``) the attempts run on a small thread pool (``SEGARENA_NOTIFY_CONCURRENCY``) and
the beat task returns at once: a slow or failing receiver delays neither scoring nor other deliveries.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from api.db import session_scope
from api.models import (
    AuditEvent, Member, NotificationDelivery, NotificationEvent, Role, Webhook, utcnow,
)

from .events import ACTIONS, context_of, email_message, kind_of, webhook_body
from .transport import (
    DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, DeliveryError, post_webhook, send_mail, sign,
)

__all__ = ["DispatchReport", "dispatch", "fan_out", "deliver", "due_deliveries", "backoff_s", "NOTIFY_TASK"]

log = logging.getLogger(__name__)

NOTIFY_TASK = "segarena.notify"
_LEASE_MARGIN_S = 60.0
_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_inflight: set[int] = set()


@dataclass
class DispatchReport:
    events: int = 0  # audit events fanned out by this pass
    created: int = 0  # deliveries created
    attempted: list[int] = field(default_factory=list)  # deliveries this pass attempted (or, background: started)
    outcomes: dict[int, str] = field(default_factory=dict)  # delivery id -> delivered | retry | failed | skipped


def backoff_s(settings: Any, attempts: int) -> float:
    """Wait after the ``attempts``-th failed attempt: backoff x 2^(attempts-1), at most the cap."""
    return float(min(settings.notify_backoff_max_s, settings.notify_backoff_s * 2 ** max(0, attempts - 1)))


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _recipients(s: Any, team_id: int) -> list[Member]:
    return list(s.scalars(select(Member).where(Member.team_id == team_id, Member.role == Role.participant,
                                               Member.email != "", Member.email_notifications.is_(True))
                          .order_by(Member.id)))


def _fan_out_one(settings: Any, event_id: int) -> int:
    """Marker and deliveries of one event, in one transaction; 0 when another dispatcher did it first."""
    try:
        with session_scope(settings.database_url) as s:
            event = s.get(AuditEvent, event_id)
            if event is None:
                return 0
            kind = kind_of(event)
            ctx = context_of(s, event, kind) if kind else None
            rows: list[NotificationDelivery] = []
            if ctx is not None:
                body = webhook_body(ctx)
                hooks = s.scalars(select(Webhook).where(Webhook.challenge_id == ctx.challenge.id,
                                                        Webhook.removed_at.is_(None)).order_by(Webhook.id))
                for hook in hooks:
                    if hook.events and ctx.kind not in hook.events:
                        continue
                    rows.append(NotificationDelivery(
                        event_id=event.id, kind=ctx.kind, channel="webhook", target=f"webhook:{hook.id}",
                        webhook_id=hook.id, challenge_id=ctx.challenge.id, recipient=hook.url, payload=body))
                if settings.smtp_host:
                    for member in _recipients(s, ctx.team.id):
                        subject, text = email_message(ctx, member, base_url=settings.public_base_url)
                        rows.append(NotificationDelivery(
                            event_id=event.id, kind=ctx.kind, channel="email", target=f"email:{member.id}",
                            member_id=member.id, challenge_id=ctx.challenge.id, recipient=member.email,
                            payload={"subject": subject, "text": text}))
            s.add(NotificationEvent(event_id=event.id, kind=(ctx.kind if ctx else kind) or "",
                                    challenge_id=ctx.challenge.id if ctx else None, deliveries=len(rows)))
            s.flush()  # the marker first: a concurrent dispatcher's marker makes this fail here
            s.add_all(rows)
        return len(rows)
    except IntegrityError:
        log.debug("event %s was dispatched by another dispatcher", event_id)
        return 0


def fan_out(settings: Any, *, now: datetime | None = None, limit: int = 500) -> tuple[int, int]:
    """Turn new audit events into deliveries; (events, deliveries created)."""
    now = now or utcnow()
    since = now - timedelta(hours=float(settings.notify_lookback_h))
    with session_scope(settings.database_url) as s:
        marked = select(NotificationEvent.event_id).where(NotificationEvent.event_id == AuditEvent.id).exists()
        ids = list(s.scalars(select(AuditEvent.id).where(AuditEvent.action.in_(list(ACTIONS)), AuditEvent.at >= since,
                                                         ~marked).order_by(AuditEvent.id).limit(limit)))
    created = 0
    for event_id in ids:
        created += _fan_out_one(settings, event_id)
    return len(ids), created


def due_deliveries(settings: Any, *, now: datetime | None = None, limit: int = 200) -> list[int]:
    now = now or utcnow()
    with session_scope(settings.database_url) as s:
        return list(s.scalars(select(NotificationDelivery.id)
                              .where(NotificationDelivery.state == "pending", NotificationDelivery.next_attempt_at <= now,
                                     or_(NotificationDelivery.lease_until.is_(None),
                                         NotificationDelivery.lease_until < now))
                              .order_by(NotificationDelivery.next_attempt_at, NotificationDelivery.id).limit(limit)))


def _attempt(settings: Any, channel: str, recipient: str, payload: dict[str, Any], secret: str, delivery_id: int,
             kind: str) -> tuple[int | None, str]:
    """One attempt: (HTTP status or None, error or ""). Never raises."""
    try:
        if channel == "webhook":
            body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
            ts = int(time.time())
            headers = {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(secret, ts, body), EVENT_HEADER: kind,
                       DELIVERY_HEADER: str(delivery_id)}
            status, excerpt = post_webhook(recipient, body, headers, timeout=float(settings.webhook_timeout_s),
                                           allow_private=bool(settings.webhook_allow_private))
            if 200 <= status < 300:
                return status, ""
            more = " ".join(excerpt.split())[:300]
            return status, f"HTTP {status}" + (f": {more}" if more else "")
        send_mail(settings, recipient, str(payload.get("subject", "")), str(payload.get("text", "")))
        return None, ""
    except DeliveryError as exc:
        return None, str(exc)[:1000]
    except Exception as exc:
        log.warning("delivery %s: unexpected %s", delivery_id, exc.__class__.__name__, exc_info=True)
        return None, f"unexpected {exc.__class__.__name__}"


def deliver(settings: Any, delivery_id: int, *, now: datetime | None = None) -> str:
    """Claim delivery ``delivery_id`` (if due and unclaimed), attempt it, record the outcome:
    ``delivered``, ``retry``, ``failed``, ``cancelled`` or ``skipped`` (not due, or another dispatcher has it)."""
    now = now or utcnow()
    lease = secrets.token_urlsafe(16)
    hold = float(max(settings.webhook_timeout_s, settings.smtp_timeout_s * 6)) + _LEASE_MARGIN_S
    with session_scope(settings.database_url) as s:
        won = _rowcount(s.execute(update(NotificationDelivery)
                        .where(NotificationDelivery.id == delivery_id, NotificationDelivery.state == "pending",
                               NotificationDelivery.next_attempt_at <= now,
                               or_(NotificationDelivery.lease_until.is_(None), NotificationDelivery.lease_until < now))
                        .values(lease=lease, lease_until=now + timedelta(seconds=hold))
                        .execution_options(synchronize_session=False)))
        if won != 1:
            return "skipped"
        d = s.get(NotificationDelivery, delivery_id)
        assert d is not None
        channel, recipient, payload, kind, attempts = d.channel, d.recipient, dict(d.payload or {}), d.kind, d.attempts
        secret = ""
        if channel == "webhook":
            hook = s.get(Webhook, d.webhook_id) if d.webhook_id else None
            if hook is None or hook.removed_at is not None:
                d.state, d.lease, d.lease_until, d.last_error = "cancelled", "", None, "the webhook was removed"
                return "cancelled"
            secret, recipient = hook.secret, hook.url
    started = time.monotonic()
    status, error = _attempt(settings, channel, recipient, payload, secret, delivery_id, kind)
    elapsed_ms = int((time.monotonic() - started) * 1000)
    done_at = utcnow()
    attempts += 1
    entry = {"attempt": attempts, "at": done_at.isoformat(), "status": status, "error": error,
             "duration_ms": elapsed_ms}
    values: dict[str, Any] = {"attempts": attempts, "last_status": status, "last_error": error, "lease": "",
                              "lease_until": None}
    if not error:
        outcome = "delivered"
        values.update(state="delivered", delivered_at=done_at)
    elif attempts >= int(settings.notify_max_attempts):
        outcome = "failed"
        values.update(state="failed")
    else:
        outcome = "retry"
        values.update(next_attempt_at=done_at + timedelta(seconds=backoff_s(settings, attempts)))
        entry["retry_at"] = values["next_attempt_at"].isoformat()
    with session_scope(settings.database_url) as s:
        d = s.get(NotificationDelivery, delivery_id)
        if d is None or d.lease != lease:
            log.warning("delivery %s: lease lost while attempting it (took %d ms)", delivery_id, elapsed_ms)
            return "skipped"
        values["log"] = [*(d.log or []), entry][-50:]
        s.execute(update(NotificationDelivery).where(NotificationDelivery.id == delivery_id,
                                                     NotificationDelivery.lease == lease).values(**values)
                  .execution_options(synchronize_session=False))
    if outcome == "delivered":
        log.info("delivery %s (%s %s, event kind %s): delivered, attempt %d", delivery_id, channel,
                 f"webhook {payload.get('event_id')}" if channel == "webhook" else "e-mail", kind, attempts)
    else:  # never the secret, the body or the address's credentials (there are none: check_url refuses them)
        log.warning("delivery %s (%s, %s): attempt %d %s: %s", delivery_id, channel, kind, attempts, outcome, error)
    return outcome


def _executor(settings: Any) -> ThreadPoolExecutor:
    global _pool  # noqa: PLW0603 - one pool per process
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=int(settings.notify_concurrency), thread_name_prefix="notify")
        return _pool


def _run_tracked(settings: Any, delivery_id: int) -> str:
    try:
        return deliver(settings, delivery_id)
    except Exception:
        log.warning("delivery %s failed to run", delivery_id, exc_info=True)
        return "error"
    finally:
        with _pool_lock:
            _inflight.discard(delivery_id)


def dispatch(settings: Any, *, background: bool = False, now: datetime | None = None) -> DispatchReport:
    """One pass: fan out new events, then attempt the due deliveries (``background``: on the process's thread
    pool, returning at once; else in parallel threads, waiting for them)."""
    report = DispatchReport()
    try:
        report.events, report.created = fan_out(settings, now=now)
    except Exception as exc:
        log.warning("notification fan-out failed: %s", exc)
    due = due_deliveries(settings, now=now)
    if background:
        pool = _executor(settings)
        for delivery_id in due:
            with _pool_lock:
                if delivery_id in _inflight:
                    continue
                _inflight.add(delivery_id)
            pool.submit(_run_tracked, settings, delivery_id)
            report.attempted.append(delivery_id)
        return report
    if due:
        with ThreadPoolExecutor(max_workers=int(settings.notify_concurrency), thread_name_prefix="notify") as pool:
            results = list(pool.map(lambda i: deliver(settings, i, now=now), due))
        report.attempted = list(due)
        report.outcomes = dict(zip(due, results))
    if report.events or report.attempted:
        log.info("notifications: %d events, %d deliveries created, %d attempted", report.events, report.created,
                 len(report.attempted))
    return report
