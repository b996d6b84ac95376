"""Worker identities: members with role ``worker`` and the queues they may serve (``Member.worker_queues``).

An organizer creates one (``POST /api/admin/workers``, ``segarena admin worker create NAME --queue cpu``): the
token is shown once. A worker token reaches only ``/api/worker/*`` (``api.deps`` refuses it everywhere else);
revoking the identity revokes all its tokens. ``SEGARENA_BOOTSTRAP_WORKER_TOKEN`` creates an embedded one
serving every cpu-kind queue at start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from api.audit import record
from api.errors import ApiError
from api.models import ApiToken, CaseResult, Member, Role, WorkerNode, utcnow

from .contract import RESERVED_QUEUES

__all__ = ["WorkerIdentity", "check_queues", "create_worker", "list_workers", "revoke_worker", "bootstrap_worker",
           "parse_queue_list", "WORKER_NAME_PATTERN", "BOOTSTRAP_WORKER_NAME"]

WORKER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}$"
BOOTSTRAP_WORKER_NAME = "embedded-worker"


@dataclass(frozen=True)
class WorkerIdentity:
    """The caller of a worker route (plain values: no DB object outlives the dependency's session)."""

    member_id: int
    name: str
    queues: tuple[str, ...]


def parse_queue_list(text: str) -> list[str]:
    return [q.strip() for q in (text or "").split(",") if q.strip()]


def check_queues(settings: Any, queues: list[str], *, status: int = 422) -> list[str]:
    """The queues, deduplicated in order, if every one is declared and servable by a worker; else ApiError."""
    declared = settings.declared_queues
    out: list[str] = []
    for q in queues:
        if q in RESERVED_QUEUES:
            raise ApiError(status, "invalid_request" if status == 422 else "forbidden",
                           f"queue {q!r} is the trusted scoring queue: it runs next to the database and the ground "
                           "truth (the API's scorer), never on an execution host; name a declared queue: "
                           f"{', '.join(declared)}")
        if q not in declared:
            raise ApiError(status, "invalid_request" if status == 422 else "forbidden",
                           f"queue {q!r} is not declared; declared queues: "
                           f"{', '.join(f'{n} ({k})' for n, k in declared.items())} "
                           "(the server's SEGARENA_QUEUES setting)")
        if q not in out:
            out.append(q)
    if not out:
        raise ApiError(status, "invalid_request", "name at least one queue, e.g. --queue cpu")
    return out


def _active_worker(session: Session, name: str) -> Member | None:
    """The worker member of this name that still has a live token (revoked identities do not count)."""
    rows = session.scalars(select(Member).where(Member.role == Role.worker, Member.name == name)
                           .order_by(Member.id.desc())).all()
    for m in rows:
        live = session.scalar(select(func.count()).select_from(ApiToken)
                              .where(ApiToken.member_id == m.id, ApiToken.revoked_at.is_(None)))
        if live:
            return m
    return None


def create_worker(session: Session, settings: Any, *, actor: Member | None, name: str, queues: list[str],
                  token: str | None = None) -> tuple[Member, str]:
    """A new worker identity and its token (shown once). 409 if an active worker has this name."""
    from api.auth.tokens import hash_token, new_token

    if not re.match(WORKER_NAME_PATTERN, name or ""):
        raise ApiError(422, "invalid_request", f"name: {name[:100]!r} must match {WORKER_NAME_PATTERN} (e.g. gpu-box-1)")
    queues = check_queues(settings, queues)
    if _active_worker(session, name) is not None:
        raise ApiError(409, "conflict", f"a worker named {name!r} exists; revoke it first "
                       f"(segarena admin worker revoke {name}) or choose another name")
    member = Member(name=name, role=Role.worker, worker_queues=",".join(queues), team_id=None)
    session.add(member)
    session.flush()
    raw = token or new_token()
    session.add(ApiToken(member_id=member.id, token_hash=hash_token(raw), prefix=raw[:8], label=f"worker:{name}"))
    record(session, actor=actor, action="worker.create", target_type="member", target_id=member.id, name=name,
           queues=queues)
    session.flush()
    return member, raw


def list_workers(session: Session, settings: Any) -> list[dict[str, Any]]:
    """Every worker identity with its nodes (hosts that said hello: last seen, calibration) and cases run."""
    members = session.scalars(select(Member).where(Member.role == Role.worker).order_by(Member.id)).all()
    out = []
    for m in members:
        live = session.scalar(select(func.count()).select_from(ApiToken)
                              .where(ApiToken.member_id == m.id, ApiToken.revoked_at.is_(None))) or 0
        nodes = session.scalars(select(WorkerNode).where(WorkerNode.member_id == m.id).order_by(WorkerNode.name)).all()
        names = [n.name for n in nodes]
        counts = dict(session.execute(select(CaseResult.worker_name, func.count()).where(CaseResult.worker_name.in_(names))
                                      .group_by(CaseResult.worker_name)).all()) if names else {}
        out.append({
            "id": m.id, "name": m.name, "queues": parse_queue_list(m.worker_queues), "revoked": live == 0,
            "created_at": m.created_at,
            "nodes": [{"name": n.name, "host": n.host, "queues": parse_queue_list(n.queues), "kind": n.kind,
                       "cpu_model": n.cpu_model, "cores": n.cores, "gpu_model": n.gpu_model,
                       "docker_version": n.docker_version, "calibration_s": n.calibration_s,
                       "started_at": n.started_at, "last_seen_at": n.last_seen_at,
                       "cases_run": int(counts.get(n.name, 0))} for n in nodes],
            "cases_run": int(sum(counts.values())),
        })
    return out


def revoke_worker(session: Session, *, actor: Member | None, name: str) -> Member:
    """Revoke every token of the active worker ``name`` (404 if none): its next call gets 401."""
    member = _active_worker(session, name)
    if member is None:
        raise ApiError(404, "not_found", f"no active worker named {name!r}; see segarena admin worker list")
    session.execute(update(ApiToken).where(ApiToken.member_id == member.id, ApiToken.revoked_at.is_(None))
                    .values(revoked_at=utcnow()))
    record(session, actor=actor, action="worker.revoke", target_type="member", target_id=member.id, name=name)
    session.flush()
    return member


def bootstrap_worker(settings: Any) -> None:
    """Create the embedded worker identity of ``SEGARENA_BOOTSTRAP_WORKER_TOKEN`` (every cpu-kind queue), once."""
    from api.bootstrap import new_token_session

    token = settings.bootstrap_worker_token
    with new_token_session(settings, token) as session:
        if session is None or not token:
            return
        queues = [n for n, k in settings.declared_queues.items() if k == "cpu" and n not in RESERVED_QUEUES]
        name = BOOTSTRAP_WORKER_NAME
        if _active_worker(session, name) is not None:
            name = f"{BOOTSTRAP_WORKER_NAME}-{utcnow().strftime('%Y%m%d%H%M%S')}"
        if queues:
            create_worker(session, settings, actor=None, name=name, queues=queues, token=token)
