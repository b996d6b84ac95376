"""Organizer-only reads: the CSV export of every result and the audit trail."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any, cast
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from api.csvsafe import csv_safe
from api.db import get_sessionmaker
from api.lifecycle import latest_attempt_subquery
from api.models import AuditEvent, CaseResult, Challenge, Run, Submission, Team, Track
from api.params import as_utc

__all__ = ["EXPORT_COLUMNS", "export_rows", "export_csv", "list_audit"]

EXPORT_COLUMNS = [
    "submission_id", "challenge", "track", "track_kind", "team_id", "team", "member_id", "label", "state", "reason",
    "created_at", "finished_at", "image_id", "image_tag", "image_user", "archive_sha256", "archive_bytes",
    "reproduces_id", "is_baseline", "excluded", "exclusion_reason", "metric_profile", "submission_dsc",
    "submission_nsd", "submission_runtime_s",
    "run_id", "attempt", "is_latest_attempt", "run_state", "run_reason", "queue", "worker_host", "docker_version",
    "cpu_model", "cpuset", "run_started_at", "run_finished_at",
    "case_id", "modality", "size_class", "case_status", "case_reason", "runtime_s", "cpu_s", "peak_memory_bytes",
    "exit_code", "dsc", "nsd", "per_class",
]


def _cell(value):
    """CSV-safe: datetimes in ISO 8601 UTC, dicts as JSON, text that a spreadsheet would run as a formula quoted."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if hasattr(value, "value"):
        return value.value
    if isinstance(value, str):
        return csv_safe(value)
    return value


def export_rows(session: Session, *, challenge: str | None = None, track: str | None = None) -> Iterator[list]:
    """Every submission × run × case result (a submission without results gives one row with empty case columns)."""
    lat = aliased(latest_attempt_subquery())
    stmt = (select(Submission, Track, Challenge, Team, Run, CaseResult, lat.c.attempt)
            .join(Track, Submission.track_id == Track.id).join(Challenge, Track.challenge_id == Challenge.id)
            .join(Team, Submission.team_id == Team.id)
            .outerjoin(Run, Run.submission_id == Submission.id)
            .outerjoin(CaseResult, CaseResult.run_id == Run.id)
            .outerjoin(lat, lat.c.submission_id == Submission.id)
            .order_by(Submission.id, Run.attempt, CaseResult.case_id))
    if challenge:
        stmt = stmt.where(Challenge.slug == challenge)
    if track:
        stmt = stmt.where(Track.slug == track)
    # SQLAlchemy types a select of more than a few entities as a row of objects: name what this one yields (no
    # .tuples(): deprecated in SQLAlchemy 2.1, a warning the test suite turns into a 500 of the export)
    rows = cast(Iterable[tuple[Submission, Track, Challenge, Team, Run | None, CaseResult | None, int | None]],
                session.execute(stmt.execution_options(yield_per=500)))
    for s, t, c, team, run, case, latest_attempt in rows:
        row: list[Any] = [s.id, c.slug, t.slug, t.kind, s.team_id, team.name, s.member_id, s.label, s.state, s.reason,
               s.created_at, s.finished_at, s.image_id, s.image_tag, s.image_user, s.archive_sha256, s.archive_bytes,
               s.reproduces_id, s.is_baseline, s.excluded, s.exclusion_reason, s.metric_profile, s.dsc, s.nsd,
               s.runtime_s]
        if run is not None:
            row += [run.id, run.attempt, run.attempt == latest_attempt, run.state, run.reason, run.queue,
                    run.worker_host, run.docker_version, run.cpu_model, run.cpuset, run.started_at, run.finished_at]
        else:
            row += [None] * 12
        if case is not None:
            row += [case.case_id, case.modality, case.size_class, case.status, case.reason, case.runtime_s, case.cpu_s,
                    case.peak_memory_bytes, case.exit_code, case.dsc, case.nsd, case.per_class]
        else:
            row += [None] * 12
        yield [_cell(v) for v in row]


def export_csv(settings, *, challenge: str | None = None, track: str | None = None) -> Iterator[str]:
    """The export as CSV text, streamed in pieces (its own session, so it outlives the request's)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(EXPORT_COLUMNS)
    with get_sessionmaker(settings.database_url)() as session:
        for i, row in enumerate(export_rows(session, challenge=challenge, track=track)):
            writer.writerow(row)
            if i % 200 == 199:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
    yield buf.getvalue()


def list_audit(*, session: Session, action: str | None = None, target_type: str | None = None,
               target_id: str | None = None, actor_member_id: int | None = None, before_id: int | None = None,
               limit: int = 200) -> list[AuditEvent]:
    """Audit events, newest first, filtered; page with ``before_id``."""
    stmt = select(AuditEvent)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    if target_type:
        stmt = stmt.where(AuditEvent.target_type == target_type)
    if target_id:
        stmt = stmt.where(AuditEvent.target_id == target_id)
    if actor_member_id is not None:
        stmt = stmt.where(AuditEvent.actor_member_id == actor_member_id)
    if before_id is not None:
        stmt = stmt.where(AuditEvent.id < before_id)
    return list(session.scalars(stmt.order_by(AuditEvent.id.desc()).limit(limit)))
