"""Audit trail: every change an organizer or participant makes is an AuditEvent (who, what, when)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from api.models import AuditEvent, Member

__all__ = ["record", "actor_name"]


def actor_name(member: Member | None) -> str:
    if member is None:
        return "system"
    return f"{member.role.value}:{member.name}#{member.id}"


def record(session: Session, *, actor: Member | None, action: str, target_type: str = "", target_id: object = "",
           actor_label: str | None = None, **details: Any) -> AuditEvent:
    """Add an audit event to ``session`` (committed with the change it describes).

    ``actor_label`` names a non-member actor, e.g. a worker ("worker:host:pid")."""
    event = AuditEvent(actor_member_id=actor.id if actor else None, actor=actor_label or actor_name(actor),
                       action=action, target_type=target_type, target_id=str(target_id), details=details)
    session.add(event)
    return event
