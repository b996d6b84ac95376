"""The trusted reaper: one periodic pass on the trusted side (the ``segarena scorer`` beat), next to the
database and the storage. Execution hosts do no housekeeping of the database; they only clean their own
host (containers of dead workers, cgroup parents) when they start.

One pass (:func:`reap`):

* the shard reaper (:func:`api.execution.shards.reap_shards`): queued shards of cancelled submissions
  cancelled, running shards whose heartbeat is stale requeued under a new lease, queued shards without a
  message sent, unscored uploads re-sent to the ``score`` queue, runs whose last shard ended finished;
* queued runs that were never split (the storage or the broker failed when the API enqueued them) and
  were created over ``SEGARENA_REQUEUE_AFTER_S`` (default ``SEGARENA_HEARTBEAT_TIMEOUT_S``) ago: split and
  sent again (``run.resent`` in the audit log);
* open resumable upload sessions idle for ``SEGARENA_UPLOAD_STALE_AFTER_S`` expired (their bytes deleted,
  their quota slot freed);
* image archives of cancelled and failed submissions past ``SEGARENA_ARCHIVE_RETENTION_H`` deleted.

Each step's failure is logged and retried at the next pass; no step stops the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from api.audit import record
from api.db import session_scope
from api.models import Run, RunState, Shard, Submission, SubmissionState, utcnow
from api.params import as_utc

from .shards import ACTOR, reap_shards

__all__ = ["ReapReport", "reap", "resend_unsplit_runs"]

log = logging.getLogger(__name__)


@dataclass
class ReapReport:
    shards: dict[str, list[int]] = field(default_factory=dict)  # reap_shards' answer
    resent: list[int] = field(default_factory=list)  # queued runs without shards, split and sent again
    uploads_expired: int = 0  # stale upload sessions aborted (their bytes deleted)
    archives_deleted: list[int] = field(default_factory=list)  # submissions whose archive was deleted

    def busy(self) -> bool:
        return bool(self.resent or self.uploads_expired or self.archives_deleted
                    or any(self.shards.get(k) for k in self.shards))


def resend_unsplit_runs(settings: Any, *, now: datetime | None = None, send: bool = True) -> list[int]:
    """Queued runs with no shard, older than the re-send limit: split and sent (each at most once per limit)."""
    now = now or utcnow()
    limit = timedelta(seconds=float(settings.requeue_after_s or settings.heartbeat_timeout_s))
    with session_scope(settings.database_url) as s:
        has_shard = select(Shard.id).where(Shard.run_id == Run.id).exists()
        rows = s.execute(select(Run.id, Run.created_at, Run.queue).join(Submission, Submission.id == Run.submission_id)
                         .where(Run.state == RunState.queued, Submission.state != SubmissionState.cancelled,
                                ~has_shard).order_by(Run.created_at, Run.id)).all()
    stale = [(rid, queue) for rid, created, queue in rows if (as_utc(created) or now) + limit < now]
    if not send:
        return [rid for rid, _ in stale]
    from .shards import enqueue_run_sharded

    done: list[int] = []
    for rid, queue in stale:
        try:
            enqueue_run_sharded(settings, rid, queue)
        except Exception as exc:
            log.warning("could not split and send run %s: %s", rid, str(exc).splitlines()[0][:200] if str(exc) else exc)
            continue
        with session_scope(settings.database_url) as s:
            record(s, actor=None, actor_label="trusted:reaper", action="run.resent", target_type="run", target_id=rid,
                   reason="queued but never split into shards (the storage or the broker was unavailable)")
        done.append(rid)
    return done


def reap(settings: Any, *, now: datetime | None = None, send: bool = True) -> ReapReport:
    """One trusted reaper pass (see the module docstring); ``send=False`` sends no broker message (tests)."""
    now = now or utcnow()
    report = ReapReport()
    try:
        report.shards = reap_shards(settings, now=now, send=send)
    except Exception as exc:
        log.warning("shard reaper failed: %s", exc)
    try:
        report.resent = resend_unsplit_runs(settings, now=now, send=send)
    except Exception as exc:
        log.warning("re-sending queued runs failed: %s", exc)
    from api.submissions.service import delete_expired_archives
    from api.submissions.uploads import expire_stale_uploads

    try:
        report.uploads_expired = expire_stale_uploads(settings=settings, now=now)
    except Exception as exc:
        log.warning("expiring stale uploads failed: %s", exc)
    try:
        report.archives_deleted = delete_expired_archives(settings=settings, now=now)
    except Exception as exc:
        log.warning("deleting expired archives failed: %s", exc)
    if report.busy():
        log.info("reaper (%s): %s", ACTOR, report)
    return report
