"""The periodic reaper: lost runs, runs never picked up, orphaned containers.

* A run in loading/running/scoring whose heartbeat is older than ``settings.heartbeat_timeout_s``
  lost its worker: it becomes ``infra_failed`` and a new attempt is queued (at most
  ``settings.max_attempts``).
* A queued run that no worker picked up within the limit (``heartbeat_timeout_s`` after it became
  eligible; e.g. the broker was down when the API sent it) gets its message re-sent — at most once per
  limit per run, and only while the broker's queue holds fewer messages than there are queued runs.
* A container carrying SegArena's labels (and this deployment's ``segarena.deployment`` label: one
  engine may serve several deployments, e.g. test databases) is an orphan when its run is no longer active, or when the
  worker that started it (``segarena.worker`` = host:pid) is gone from this host, or when the run now
  belongs to another worker; orphans are removed (force).
* Open resumable upload sessions that received no chunk for ``settings.upload_stale_after_s`` are
  expired: their partial file is deleted and the quota slot they held is freed.
* The image archives of cancelled and failed submissions that ended over ``settings.archive_retention_h``
  hours ago are deleted (``Submission.archive_deleted_at``); succeeded submissions keep theirs.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from api.db import session_scope
from api.models import AuditEvent, Run, RunState, utcnow

from . import sandbox as sb
from .runner import ACTIVE_RUN_STATES, Sender, aware, backoff_s, celery_sender, retry_or_fail

__all__ = ["reap", "ReapReport", "remove_orphan_containers"]

log = logging.getLogger("segarena.reaper")


@dataclass
class ReapReport:
    requeued: list[int] = field(default_factory=list)  # lost runs (their new attempts' ids)
    lost: list[int] = field(default_factory=list)  # runs marked infra_failed
    resent: list[int] = field(default_factory=list)  # queued runs whose message was re-sent
    containers_removed: list[str] = field(default_factory=list)
    uploads_expired: int = 0  # stale upload sessions aborted (their bytes deleted)
    archives_deleted: list[int] = field(default_factory=list)  # submissions whose archive was deleted


def _queue_sizes(settings: Any, queues: set[str]) -> dict[str, int] | None:
    try:
        from .celery_app import make_celery

        app = make_celery(settings)
        sizes = {}
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            for q in queues:
                sizes[q] = channel.queue_declare(queue=q, passive=True).message_count
        return sizes
    except Exception as exc:  # noqa: BLE001 - unknown: assume the queue may be missing messages
        log.info("queue sizes unavailable: %s", exc)
        return None


def remove_orphan_containers(client: Any, settings: Any) -> list[str]:
    """Remove containers labelled by SegArena whose run or worker is gone; returns their ids."""
    removed: list[str] = []
    containers = client.api.containers(
        all=True, filters={"label": [sb.LABEL_RUN, f"{sb.LABEL_DEPLOYMENT}={sb.deployment_id(settings)}"]})
    if not containers:
        return removed
    host = socket.gethostname()
    ids = {int(v) for c in containers if (v := (c.get("Labels") or {}).get(sb.LABEL_RUN, "")).isdigit()}
    with session_scope(settings.database_url) as s:
        runs = {r.id: (r.state, r.worker_host, r.worker_pid) for r in s.execute(select(Run).where(Run.id.in_(ids))).scalars()}
    for c in containers:
        labels = c.get("Labels") or {}
        try:
            run_id = int(labels.get(sb.LABEL_RUN, ""))
        except ValueError:
            run_id = -1
        owner = labels.get(sb.LABEL_WORKER, "")
        o_host, _, o_pid = owner.rpartition(":")
        state = runs.get(run_id)
        orphan = state is None or state[0] not in ACTIVE_RUN_STATES
        if not orphan and o_host == host and o_pid.isdigit() and not sb.pid_alive(int(o_pid)):
            orphan = True
        if not orphan and state is not None and (state[1], state[2]) != (o_host, int(o_pid) if o_pid.isdigit() else None):
            orphan = True  # the run was taken over by another worker
        if orphan:
            try:
                client.api.remove_container(c["Id"], force=True)
                removed.append(c["Id"])
            except Exception as exc:  # noqa: BLE001 - removed meanwhile
                log.info("could not remove %s: %s", c["Id"][:12], exc)
    return removed


def _storage_sweep(settings: Any, report: ReapReport, now: datetime) -> None:
    """Expire stale upload sessions and delete archives past their retention (each failure only logged)."""
    from api.submissions.service import delete_expired_archives
    from api.submissions.uploads import expire_stale_uploads

    try:
        report.uploads_expired = expire_stale_uploads(settings=settings, now=now)
    except Exception as exc:  # noqa: BLE001 - next pass
        log.warning("expiring stale uploads failed: %s", exc)
    try:
        report.archives_deleted = delete_expired_archives(settings=settings, now=now)
    except Exception as exc:  # noqa: BLE001 - next pass
        log.warning("deleting expired archives failed: %s", exc)


def reap(settings: Any, *, client: Any = None, sender: Sender | None = None, now: datetime | None = None,
         containers: bool = True) -> ReapReport:
    """One reaper pass (see the module docstring)."""
    now = now or utcnow()
    report = ReapReport()
    actor = f"reaper:{sb.worker_identity()}"
    timeout = timedelta(seconds=settings.heartbeat_timeout_s)
    url = settings.database_url
    to_send: list[tuple[int, str, float]] = []
    with session_scope(url) as s:
        active = list(s.execute(select(Run).where(Run.state.in_(ACTIVE_RUN_STATES))).scalars())
    for run in active:
        beat = aware(run.heartbeat_at or run.started_at or run.created_at)
        if beat is None or now - beat <= timeout:
            continue
        with session_scope(url) as s:
            # claim the lost run atomically: only one reaper requeues it
            same_beat = Run.heartbeat_at.is_(None) if run.heartbeat_at is None else Run.heartbeat_at == run.heartbeat_at
            res = s.execute(update(Run).where(Run.id == run.id, Run.state == run.state, same_beat)
                            .values(heartbeat_at=now).execution_options(synchronize_session=False))
            if res.rowcount != 1:
                continue
            row = s.get(Run, run.id)
            reason = (f"worker lost: {row.worker_host}:{row.worker_pid} sent no heartbeat for "
                      f"{(now - beat).total_seconds():.0f} s (limit {settings.heartbeat_timeout_s} s)")
            new_id = retry_or_fail(s, row, reason=reason, settings=settings, actor=actor, now=now)
            report.lost.append(run.id)
            if new_id is not None:
                report.requeued.append(new_id)
                to_send.append((new_id, row.queue, backoff_s(settings, row.attempt + 1)))
    # queued runs never picked up
    limit = timedelta(seconds=settings.requeue_after_s or settings.heartbeat_timeout_s)
    with session_scope(url) as s:
        queued = list(s.execute(select(Run).where(Run.state == RunState.queued).order_by(Run.created_at, Run.id)).scalars())
        resent_at: dict[str, datetime] = {}
        if queued:
            for ev in s.execute(select(AuditEvent).where(AuditEvent.action == "run.resent",
                                                         AuditEvent.target_id.in_([str(r.id) for r in queued]))).scalars():
                resent_at[ev.target_id] = max(aware(ev.at), resent_at.get(ev.target_id, aware(ev.at)))
    sent_now = {rid for rid, _, _ in to_send}
    stale = [r for r in queued if r.id not in sent_now
             and aware(r.created_at) + timedelta(seconds=backoff_s(settings, r.attempt)) + limit < now
             and now - resent_at.get(str(r.id), aware(r.created_at)) > limit]
    if stale:
        queues = {r.queue for r in queued}
        sizes = _queue_sizes(settings, queues)
        for q in queues:
            waiting = [r for r in queued if r.queue == q]
            deficit = len(waiting) - (sizes or {}).get(q, 0)
            for r in [r for r in stale if r.queue == q][: max(0, deficit)]:
                to_send.append((r.id, q, 0.0))
                report.resent.append(r.id)
        if report.resent:
            with session_scope(url) as s:
                for rid in report.resent:
                    s.add(AuditEvent(actor=actor, action="run.resent", target_type="run", target_id=str(rid),
                                     details={"reason": "queued but not picked up by any worker"}))
    if to_send:
        send = sender if sender is not None else celery_sender(settings)
        for rid, q, countdown in to_send:
            try:
                send(rid, q, countdown)
            except Exception as exc:  # noqa: BLE001 - next pass re-sends it
                log.warning("could not enqueue run %s: %s", rid, exc)
    if containers:
        try:
            client = client or sb.get_docker_client(settings)
            report.containers_removed = remove_orphan_containers(client, settings)
            sb.cleanup_cgroup_parents()
        except Exception as exc:  # noqa: BLE001 - no engine on this host now: next pass
            log.warning("orphan container sweep failed: %s", exc)
    _storage_sweep(settings, report, now)
    if report.lost or report.resent or report.containers_removed or report.uploads_expired or report.archives_deleted:
        log.info("reaper: %s", report)
    return report

