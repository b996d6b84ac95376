"""The submission lifecycle: accept (rules, quota, duplicates), enqueue, read, cancel, re-run.

Quota: N submissions per team per track per rolling 24 h. Submissions that failed for infrastructure
reasons (their latest run ended ``infra_failed``) do not count; a cancelled one counts once its run had
started, and beyond the team's ``max_free_cancels_per_day`` cancellations before start per 24 h. Each open
resumable upload session holds a slot of its track until it completes, is deleted or goes stale. The final
check runs under a per-team lock (``SELECT … FOR UPDATE`` on the team row on PostgreSQL, an exclusive
``flock`` on SQLite, which also holds across API processes), so concurrent uploads cannot overrun it.

Enqueueing happens after the commit. If the broker is down the submission stays ``queued`` (the
reaper requeues queued runs it finds without a pick-up), and the answer is still 201 with a ``note``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from api.audit import record
from api.challenges.service import ensure_open
from api.db import affected_rows, get_sessionmaker
from api.errors import ApiError
from api.lifecycle import ACTIVE_RUN_STATES, cancel_submission_runs, latest_runs, new_attempt
from api.models import (
    AuditEvent, CaseResult, CaseStatus, Challenge, Member, Role, Run, RunState, Submission,
    SubmissionState, Team, Track, TrackKind, Upload, UploadState, utcnow,
)
from api.params import as_utc
from api.queue import EnqueueError, enqueue_run
from api.storage import Storage, StorageError, archive_key
from api.submissions import feedback, schemas
from api.submissions.archive import ImageInfo

log = logging.getLogger(__name__)

__all__ = [
    "Ticket", "Staged", "prepare_submission", "create_submission", "submission_public", "list_submissions",
    "get_visible_submission", "cancel_submission", "submission_logs", "submission_results", "rerun_submission",
    "count_toward_quota", "team_lock", "load_submission", "check_deadline", "open_uploads", "refunded_cancellations",
    "delete_expired_archives",
]

LOG_TAIL_CHARS = 4000
RUN_LOG_TAIL_CHARS = 16000
ENQUEUE_NOTE = ("the submission is queued, but the job broker did not answer; it will start automatically "
                "when the broker is back (nothing to re-upload)")


@dataclass(frozen=True)
class Ticket:
    """What was checked before the archive arrived: who submits to which track."""

    team_id: int
    member_id: int
    track_id: int
    reproduces_id: int | None
    label: str
    began_at: datetime | None = None  # when the archive started to arrive (deadline grace)


@dataclass
class Staged:
    """An archive fully received and checked, waiting in storage under a temporary name."""

    path: Path
    sha256: str
    size: int
    info: ImageInfo
    filename: str = ""


def _session(settings) -> Session:
    return get_sessionmaker(settings.database_url)()


# ---------------------------------------------------------------------------------------------
# rules
# ---------------------------------------------------------------------------------------------
def _check_reproduces(session: Session, track: Track, reproduces: int | None, *, organizer: bool = False) -> None:
    """A reproduction names a submission listed on the public board of a main or booster track of this challenge
    (organizers: any succeeded one). Every other id, existing or not, gets the same answer: ids stay unprobed."""
    if track.kind != TrackKind.reproducibility:
        if reproduces is not None:
            raise ApiError(422, "invalid_request", f"track {track.slug!r} is a {track.kind.value} track; "
                           "only reproducibility tracks take 'reproduces'")
        return
    if reproduces is None:
        raise ApiError(422, "reproduces_required", f"track {track.slug!r} is a reproducibility track: name the submission "
                       "you reproduce with reproduces=<submission id> (a succeeded main or booster submission)")
    from api import leaderboard as lb

    target = session.get(Submission, reproduces)
    ok = (target is not None and target.state == SubmissionState.succeeded
          and target.track.challenge_id == track.challenge_id
          and target.track.kind in (TrackKind.main, TrackKind.booster)
          and (organizer or lb.publicly_visible(session, target)))
    if not ok:
        raise ApiError(422, "invalid_reproduces", f"submission {reproduces} is not on the public leaderboard of a main "
                       "or booster track of this challenge; reproduces must name a submission listed there")


def _started(session: Session, ids: list[int]) -> set[int]:
    """Those of ``ids`` with a run that started (a worker began loading it)."""
    if not ids:
        return set()
    return set(session.scalars(select(Run.submission_id).where(Run.submission_id.in_(ids), Run.started_at.is_not(None))))


def refunded_cancellations(session: Session, *, team_id: int, now=None, free: int = 2) -> list[int]:
    """The team's cancellations whose quota slot is refunded: the first ``free`` of the last 24 h that were
    cancelled before their run started (over all tracks), oldest first."""
    now = now or utcnow()
    if free <= 0:
        return []
    when = func.coalesce(Submission.cancelled_at, Submission.finished_at, Submission.updated_at)
    rows = list(session.execute(
        select(Submission.id).where(Submission.team_id == team_id, Submission.state == SubmissionState.cancelled,
                                    when > now - timedelta(days=1))
        .order_by(when, Submission.id)).scalars())
    started = _started(session, rows)
    return [sid for sid in rows if sid not in started][:free]


def count_toward_quota(session: Session, *, team_id: int, track_id: int, now=None,
                       free_cancels: int | None = None) -> list[Submission]:
    """The team's submissions to the track in the last 24 h that count toward its quota, oldest first.

    Infrastructure failures do not count; a cancelled submission counts unless it is one of the team's
    ``free_cancels`` (setting ``max_free_cancels_per_day``) cancellations before start in the last 24 h."""
    now = now or utcnow()
    if free_cancels is None:
        from api.settings import get_settings

        free_cancels = get_settings().max_free_cancels_per_day
    rows = list(session.scalars(
        select(Submission).where(Submission.team_id == team_id, Submission.track_id == track_id,
                                 Submission.created_at > now - timedelta(days=1))
        .order_by(Submission.created_at)))
    refunded: set[int] = set()
    if any(s.state == SubmissionState.cancelled for s in rows):
        refunded = set(refunded_cancellations(session, team_id=team_id, now=now, free=free_cancels))
    failed = [s.id for s in rows if s.state == SubmissionState.failed]
    infra = {sid for sid, run in latest_runs(session, failed).items() if run.state == RunState.infra_failed}
    return [s for s in rows if s.id not in infra and s.id not in refunded]


def open_uploads(session: Session, *, team_id: int, track_id: int | None = None, now=None,
                 stale_after_s: int = 6 * 3600, exclude: str | None = None) -> list[Upload]:
    """The team's open resumable upload sessions (on ``track_id``, or all), not yet stale, oldest first."""
    now = now or utcnow()
    stmt = select(Upload).where(Upload.team_id == team_id, Upload.state == UploadState.open,
                                Upload.updated_at > now - timedelta(seconds=stale_after_s))
    if track_id is not None:
        stmt = stmt.where(Upload.track_id == track_id)
    if exclude is not None:
        stmt = stmt.where(Upload.id != exclude)
    return list(session.scalars(stmt.order_by(Upload.created_at)))


def _settings_or_default(settings):
    if settings is not None:
        return settings
    from api.settings import get_settings

    return get_settings()


def _check_quota(session: Session, track: Track, team_id: int, *, settings=None, count_open: bool = True) -> None:
    """Refuse (429) when the team's counted submissions plus (``count_open``) its open upload sessions on the
    track fill its quota. Admission (opening a session, starting a one-shot upload) counts the open sessions:
    each holds a slot. Completion counts submissions only: the first upload to complete takes the slot."""
    settings = _settings_or_default(settings)
    now = utcnow()
    counted = count_toward_quota(session, team_id=team_id, track_id=track.id, now=now,
                                 free_cancels=settings.max_free_cancels_per_day)
    pending = open_uploads(session, team_id=team_id, track_id=track.id, now=now,
                           stale_after_s=settings.upload_stale_after_s) if count_open else []
    if len(counted) + len(pending) >= track.quota_per_day:
        if track.quota_per_day == 0:
            raise ApiError(429, "quota_exceeded", f"track {track.slug!r} takes no submissions at the moment (quota 0)")
        if len(counted) >= track.quota_per_day:
            frees = as_utc(counted[0].created_at) + timedelta(days=1)
            raise ApiError(429, "quota_exceeded",
                           f"your team has used its quota of {track.quota_per_day} submissions per 24 h on track "
                           f"{track.slug!r}; the next slot frees at {frees.isoformat(timespec='seconds')} "
                           "(infrastructure-failed submissions do not count; cancelled ones count once their run "
                           f"started, or beyond {settings.max_free_cancels_per_day} cancellations per 24 h)",
                           retry_at=frees.isoformat(timespec="seconds"))
        ids = [u.id for u in pending]
        raise ApiError(429, "quota_exceeded",
                       f"your team's quota of {track.quota_per_day} submissions per 24 h on track {track.slug!r} is "
                       f"taken by {len(counted)} submission(s) and {len(pending)} open upload session(s) "
                       f"({', '.join(ids)}); an open upload holds a slot until it ends: complete it "
                       "(POST /api/uploads/{id}/complete) or delete it (DELETE /api/uploads/{id}) to free the slot",
                       open_uploads=ids)
    from api.accounting.service import check_budget

    check_budget(session, track, team_id, settings=settings)  # 403 budget_exhausted past a compute budget


def _check_duplicate(session: Session, track: Track, team_id: int, image_id: str) -> None:
    earlier = session.scalars(
        select(Submission).where(Submission.team_id == team_id, Submission.track_id == track.id,
                                 Submission.image_id == image_id, Submission.state != SubmissionState.cancelled)
        .options(selectinload(Submission.runs)).order_by(Submission.id)).all()
    for sub in earlier:
        if sub.state == SubmissionState.failed and sub.runs and sub.runs[-1].state == RunState.infra_failed:
            continue  # an infrastructure failure: the same image may come again
        raise ApiError(409, "duplicate_image",
                       f"your team already submitted image {image_id} to track {track.slug!r} as submission "
                       f"{sub.id} ({sub.state.value}); change the image to submit again, or ask the organizers for a re-run",
                       submission_id=sub.id)


@contextmanager
def team_lock(session: Session, settings, team_id: int):
    """Serialize quota-checked writes of one team (held until the block, and its commit, ends)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Team.id).where(Team.id == team_id).with_for_update())
        yield
        return
    lock_dir = Path(settings.data_dir) / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"team-{team_id}.lock", os.O_CREAT | os.O_RDWR, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# creating
# ---------------------------------------------------------------------------------------------
def prepare_submission(*, session: Session, member: Member, challenge: str, track: str,
                       reproduces: int | None, label: str, settings=None) -> Ticket:
    """Check everything that can be checked before the archive arrives (fail fast, before gigabytes)."""
    from api.challenges.service import get_track

    if member.team_id is None:
        raise ApiError(403, "no_team", "you are not a member of a team; only team members can submit "
                       "(organizers: add yourself to a team, e.g. for baselines)")
    row = get_track(session=session, challenge=challenge, track=track)
    ensure_open(row)
    from api.participants.service import require_terms

    require_terms(session, member, row.challenge)  # 403 terms_not_accepted, naming how to accept
    _check_reproduces(session, row, reproduces, organizer=member.role == Role.organizer)
    _check_quota(session, row, member.team_id, settings=settings)
    return Ticket(team_id=member.team_id, member_id=member.id, track_id=row.id, reproduces_id=reproduces,
                  label=label.strip()[:200], began_at=utcnow())


def check_deadline(track: Track, began_at: datetime | None, now: datetime | None = None) -> None:
    """At completion: a track that closed meanwhile still takes an upload begun before its close time, for
    ``track.upload_grace_s`` seconds after it; later (or an upload begun after the close), 403 ``track_closed``."""
    now = now or utcnow()
    closes = as_utc(track.closes_at)
    if closes is None or now < closes:
        return
    grace = timedelta(seconds=track.upload_grace_s or 0)
    began = as_utc(began_at)
    if began is not None and began < closes and now <= closes + grace:
        return
    if began is not None and began < closes:
        raise ApiError(403, "track_closed",
                       f"track {track.slug!r} closed for submissions at {closes.isoformat()}; an upload begun before "
                       f"then had until {(closes + grace).isoformat()} ({int(grace.total_seconds())} s of grace) to "
                       f"complete, and this one completed at {now.isoformat(timespec='seconds')}; it was not accepted")
    raise ApiError(403, "track_closed", f"track {track.slug!r} closed for submissions at {closes.isoformat()}")


def create_submission(*, settings, ticket: Ticket, staged: Staged, actor_id: int) -> tuple[int, str | None]:
    """Record a checked archive as a queued submission with its first run, then enqueue it.

    Returns (submission id, note). The staged file is moved into storage, or left for the caller to delete.
    """
    storage = Storage(settings.storage_dir)
    store = Storage.from_settings(settings)
    key: str | None = None
    if not store.local:  # object storage: upload before taking the team lock (a large archive takes a while)
        key = archive_key("u" + uuid.uuid4().hex, compressed=staged.info.compressed)
        try:
            store.move_in(key, staged.path)
        except StorageError as exc:
            log.error("could not store an archive as %s: %s", key, exc)
            raise ApiError(503, "storage_unavailable", "the server could not store the archive in its object storage; "
                           "try again in a few minutes, or tell the organizers if it keeps failing") from None
    with _session(settings) as session:
        dest: Path | None = None
        try:
            with team_lock(session, settings, ticket.team_id):
                track = session.get(Track, ticket.track_id)
                if track is None:
                    raise ApiError(404, "not_found", "the track was deleted while you uploaded")
                submitter = session.get(Member, ticket.member_id)
                _check_reproduces(session, track, ticket.reproduces_id,
                                  organizer=submitter is not None and submitter.role == Role.organizer)
                check_deadline(track, ticket.began_at)
                _check_duplicate(session, track, ticket.team_id, staged.info.image_id)
                _check_quota(session, track, ticket.team_id, settings=settings, count_open=False)
                actor = session.get(Member, actor_id)
                sub = Submission(
                    track_id=track.id, team_id=ticket.team_id, member_id=ticket.member_id, label=ticket.label,
                    state=SubmissionState.queued, archive_path="", archive_sha256=staged.sha256,
                    archive_bytes=staged.size, image_id=staged.info.image_id, image_tag=staged.info.image_tag[:300],
                    image_user=staged.info.user, reproduces_id=ticket.reproduces_id,
                    metric_profile=track.metric_profile,
                )
                session.add(sub)
                session.flush()
                if key is not None:
                    sub.archive_path = key
                else:
                    dest = storage.image_dir(sub.id) / ("image.tar.gz" if staged.info.compressed else "image.tar")
                    Storage.atomic_move(staged.path, dest)
                    os.chmod(dest, 0o440)
                    sub.archive_path = storage.relative(dest)
                run = Run(submission_id=sub.id, attempt=1, state=RunState.queued, queue=track.queue,
                          requested_by=f"upload:{ticket.member_id}", metric_profile=track.metric_profile,
                          testset=track.testset[:200], case_timeout_s=float(track.case_timeout_s))
                session.add(run)
                session.flush()
                record(session, actor=actor, action="submission.create", target_type="submission", target_id=sub.id,
                       track_id=track.id, image_id=staged.info.image_id, image_tag=staged.info.image_tag,
                       archive_sha256=staged.sha256, archive_bytes=staged.size, run_id=run.id,
                       filename=staged.filename, reproduces_id=ticket.reproduces_id)
                session.commit()
        except BaseException:
            session.rollback()
            if dest is not None:
                Storage.remove(dest.parent)
            if key is not None:
                store.delete(key)
            raise
        note = _enqueue(session, settings, run)
        return sub.id, note


def _enqueue(session: Session, settings, run: Run) -> str | None:
    try:
        task_id = enqueue_run(settings, run.id, run.queue)
    except EnqueueError as exc:
        log.warning("could not enqueue run %s on %s: %s", run.id, run.queue, exc)
        record(session, actor=None, action="run.enqueue_failed", target_type="run", target_id=run.id, error=str(exc))
        session.commit()
        return ENQUEUE_NOTE
    session.execute(update(Run).where(Run.id == run.id).values(task_id=task_id[:64]))
    session.commit()
    return None


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
def _progress(session: Session, runs: list[Run]) -> dict[int, schemas.Progress]:
    counts: dict[int, Counter] = {r.id: Counter() for r in runs}
    if runs:
        for run_id, status, n in session.execute(
                select(CaseResult.run_id, CaseResult.status, func.count()).where(CaseResult.run_id.in_(list(counts)))
                .group_by(CaseResult.run_id, CaseResult.status)):
            counts[run_id][status.value] = n
    return {r.id: schemas.Progress(done=sum(counts[r.id].values()), total=max(r.cases_total, sum(counts[r.id].values())),
                                   by_status=dict(counts[r.id])) for r in runs}


def _failed_cases(session: Session, runs: list[Run]) -> dict[int, list[feedback.FailedCase]]:
    """Each run's failed cases (what the feedback policy needs to rewrite a reason), in one query."""
    out: dict[int, list[feedback.FailedCase]] = {r.id: [] for r in runs}
    if runs:
        for run_id, case_id, status, exit_code, reason in session.execute(
                select(CaseResult.run_id, CaseResult.case_id, CaseResult.status, CaseResult.exit_code, CaseResult.reason)
                .where(CaseResult.run_id.in_(list(out)), CaseResult.status != CaseStatus.ok).order_by(CaseResult.id)):
            out[run_id].append(feedback.FailedCase(case_id, status, exit_code, reason))
    return out


def submission_public(session: Session, subs: list[Submission], *, note: str | None = None,
                      viewer: Member | None = None) -> list[schemas.SubmissionPublic]:
    """Views of ``subs`` as ``viewer`` may see them (the track's feedback policy; organizers: everything).

    ``viewer`` None stands for anyone who is not an organizer: the policy applies."""
    runs = latest_runs(session, [s.id for s in subs])
    failed = _failed_cases(session, list(runs.values()))
    views = _submission_views(session, subs, runs, note=note)
    out = []
    for s, view in zip(subs, views):
        run = runs.get(s.id)
        out.append(feedback.redact(view, track=s.track, viewer=viewer, failed=failed.get(run.id, []) if run else [],
                                   had_cases=view.progress.done > 0))
    return out


def _submission_views(session: Session, subs: list[Submission], runs: dict[int, Run], *,
                      note: str | None = None) -> list[schemas.SubmissionPublic]:
    """Unredacted views of ``subs`` (their latest attempt and its progress)."""
    progress = _progress(session, list(runs.values()))
    out = []
    for s in subs:
        run = runs.get(s.id)
        out.append(schemas.SubmissionPublic(
            id=s.id, challenge=s.track.challenge.slug, track=s.track.slug, track_id=s.track_id, team_id=s.team_id,
            team=s.team.name, member_id=s.member_id, label=s.label, state=s.state, reason=s.reason,
            attempt=run.attempt if run else 0, run_state=run.state if run else None,
            progress=progress[run.id] if run else schemas.Progress(done=0, total=0),
            archive_sha256=s.archive_sha256, archive_bytes=s.archive_bytes, image_id=s.image_id, image_tag=s.image_tag,
            image_user=s.image_user, reproduces_id=s.reproduces_id, is_baseline=s.is_baseline, excluded=s.excluded,
            exclusion_reason=s.exclusion_reason, metric_profile=s.metric_profile, dsc=s.dsc, nsd=s.nsd,
            runtime_s=s.runtime_s, aggregates=s.aggregates or {}, created_at=as_utc(s.created_at),
            updated_at=as_utc(s.updated_at), finished_at=as_utc(s.finished_at), note=note,
        ))
    return out


def load_submission(session: Session, submission_id: int) -> Submission | None:
    return session.scalar(select(Submission).where(Submission.id == submission_id)
                          .options(selectinload(Submission.track).selectinload(Track.challenge),
                                   selectinload(Submission.team)))


def get_visible_submission(*, session: Session, member: Member, submission_id: int) -> Submission:
    """The submission if ``member`` may see it (own team, or organizer); otherwise 404, never 403."""
    sub = load_submission(session, submission_id)
    if sub is None or (member.role != Role.organizer and sub.team_id != member.team_id):
        raise ApiError(404, "not_found", f"submission {submission_id} does not exist or is not your team's")
    return sub


def list_submissions(*, session: Session, member: Member, challenge: str | None = None, track: str | None = None,
                     track_id: int | None = None, team_id: int | None = None, state: SubmissionState | None = None,
                     limit: int = 100, offset: int = 0) -> list[Submission]:
    """Submissions ``member`` may see (own team; organizers: all), newest first, filtered."""
    stmt = (select(Submission).join(Track, Submission.track_id == Track.id).join(Challenge, Track.challenge_id == Challenge.id)
            .options(selectinload(Submission.track).selectinload(Track.challenge), selectinload(Submission.team)))
    if member.role != Role.organizer:
        if member.team_id is None:
            return []
        stmt = stmt.where(Submission.team_id == member.team_id)
    if team_id is not None:
        stmt = stmt.where(Submission.team_id == team_id)
    if challenge is not None:
        stmt = stmt.where(Challenge.slug == challenge)
    if track is not None:
        stmt = stmt.where(Track.slug == track)
    if track_id is not None:
        stmt = stmt.where(Submission.track_id == track_id)
    if state is not None:
        stmt = stmt.where(Submission.state == state)
    return list(session.scalars(stmt.order_by(Submission.id.desc()).limit(limit).offset(offset)))


def _tail(text: str, n: int) -> str:
    return text if len(text) <= n else "…" + text[-n:]


def submission_logs(*, session: Session, sub: Submission, viewer: Member | None = None) -> schemas.SubmissionLogs:
    """The latest attempt's per-case stdout/stderr tails (truncated), as the feedback policy lets ``viewer`` see them."""
    run = latest_runs(session, [sub.id]).get(sub.id)
    cases = list(session.scalars(select(CaseResult).where(CaseResult.run_id == run.id).order_by(CaseResult.id))) if run else []
    failed = [feedback.FailedCase(c.case_id, c.status, c.exit_code, c.reason) for c in cases if c.status != CaseStatus.ok]
    return feedback.redact(schemas.SubmissionLogs(
        submission_id=sub.id, attempt=run.attempt if run else 0, run_state=run.state if run else None,
        reason=(run.reason if run else "") or sub.reason, log_tail=_tail(run.log_tail, RUN_LOG_TAIL_CHARS) if run else "",
        cases=[schemas.CaseLog(case=c.case_id, case_id=c.case_id, status=c.status, reason=c.reason, exit_code=c.exit_code,
                               stdout_tail=_tail(c.stdout_tail, LOG_TAIL_CHARS), stderr_tail=_tail(c.stderr_tail, LOG_TAIL_CHARS))
               for c in cases],
        truncated_to_chars=LOG_TAIL_CHARS,
    ), track=sub.track, viewer=viewer, failed=failed, had_cases=bool(cases))


def submission_results(*, session: Session, sub: Submission, viewer: Member | None = None) -> schemas.SubmissionResults:
    """The latest attempt's per-case results, with the submission's aggregates, as the feedback policy lets
    ``viewer`` see them."""
    run = latest_runs(session, [sub.id]).get(sub.id)
    return feedback.redact(schemas.SubmissionResults(
        submission_id=sub.id, state=sub.state, attempt=run.attempt if run else 0, metric_profile=sub.metric_profile,
        dsc=sub.dsc, nsd=sub.nsd, runtime_s=sub.runtime_s, aggregates=sub.aggregates or {},
        cases=_case_rows(session, run) if run else []), track=sub.track, viewer=viewer)


def _iterations_public(case: CaseResult) -> list[dict[str, Any]] | None:
    """An interactive case's iterations as participants see them: scores, status, runtime (no clicks)."""
    if not isinstance(case.iterations, list):
        return None
    keys = ("iteration", "status", "valid", "dsc", "nsd", "runtime_s", "budget_exceeded")
    return [{k: e.get(k) for k in keys} for e in case.iterations if isinstance(e, dict)]


def _case_rows(session: Session, run: Run) -> list[schemas.CaseResultPublic]:
    return [schemas.CaseResultPublic(case=c.case_id, case_id=c.case_id, attempt=run.attempt, modality=c.modality,
                                     size_class=c.size_class,
                                     status=c.status, reason=c.reason, runtime_s=c.runtime_s,
                                     peak_memory_bytes=c.peak_memory_bytes, exit_code=c.exit_code, dsc=c.dsc, nsd=c.nsd,
                                     per_class=c.per_class or {},
                                     undefined=c.status == CaseStatus.ok and c.dsc is None,
                                     dsc_auc=c.dsc_auc, nsd_auc=c.nsd_auc,
                                     budget_exceeded=bool(c.budget_exceeded), iterations=_iterations_public(c))
            for c in session.scalars(select(CaseResult).where(CaseResult.run_id == run.id).order_by(CaseResult.case_id))]


# ---------------------------------------------------------------------------------------------
# changing
# ---------------------------------------------------------------------------------------------
def cancel_submission(*, session: Session, member: Member, submission_id: int, settings=None) -> Submission:
    """Cancel a submission that has not finished (queued, loading, running or scoring): its run ends ``cancelled``
    at once, queued shards stop, running shards' containers are killed by their hosts at the next heartbeat
    (``SEGARENA_SHARD_HEARTBEAT_S``), nothing more is recorded or scored for it.

    It stops counting toward the quota only if its run had not started and it is one of the team's first
    ``max_free_cancels_per_day`` such cancellations in 24 h (see ``count_toward_quota``); the reason says which."""
    settings = _settings_or_default(settings)
    sub = get_visible_submission(session=session, member=member, submission_id=submission_id)
    now = utcnow()
    from api.execution.shards import cancel_running_shards, cancel_submission_shards

    # a running (or scoring) run stops too: its shards' holders kill their containers at their next heartbeat
    # (cancel: true) and nothing more is recorded or scored for it
    if not cancel_submission_runs(session, sub, reason=f"cancelled by {member.name}", actor=member, now=now):
        session.rollback()
        session.refresh(sub)
        raise ApiError(409, "not_cancellable", f"submission {sub.id} is {sub.state.value}; only queued, loading, "
                       "running or scoring submissions can be cancelled")
    cancel_submission_shards(session, sub.id, now=now)  # sharded runs: queued shards stop at once
    cancel_running_shards(session, sub.id, now=now)  # and running ones at their holder's next heartbeat
    free = settings.max_free_cancels_per_day
    if sub.id in _started(session, [sub.id]):
        counts, why = True, "it counts toward the quota: its run had started"
    elif sub.id in refunded_cancellations(session, team_id=sub.team_id, now=now, free=free):
        counts, why = False, f"a free cancellation (at most {free} per 24 h): it does not count toward the quota"
    else:
        counts, why = True, f"it counts toward the quota: the team's {free} free cancellations per 24 h are used"
    session.execute(update(Submission).where(Submission.id == sub.id)
                    .values(reason=f"cancelled by {member.name}; {why}"))
    record(session, actor=member, action="submission.cancel", target_type="submission", target_id=sub.id,
           counts_toward_quota=counts)
    session.commit()
    session.refresh(sub)
    return sub


def rerun_submission(*, session: Session, settings, actor: Member, submission_id: int) -> tuple[Submission, str | None]:
    """A new attempt (organizers): a queued Run with attempt + 1. Refused while an attempt is still active."""
    sub = get_visible_submission(session=session, member=actor, submission_id=submission_id)
    if sub.archive_deleted_at is not None:
        raise ApiError(409, "archive_deleted", f"submission {sub.id} cannot be re-run: its image archive was deleted at "
                       f"{as_utc(sub.archive_deleted_at).isoformat(timespec='seconds')} (archives of cancelled and failed "
                       f"submissions are kept {settings.archive_retention_h:g} h); the team must upload the image again")
    active = session.scalars(select(Run).where(Run.submission_id == sub.id, Run.state.in_(ACTIVE_RUN_STATES))
                             .order_by(Run.attempt)).all()
    if active:
        raise ApiError(409, "run_active", f"submission {sub.id} has attempt {active[-1].attempt} still "
                       f"{active[-1].state.value}; wait for it to finish (or cancel it) before re-running")
    previous = sub.state
    try:
        run = new_attempt(session, sub, requested_by=f"rerun:{actor.id}")
    except IntegrityError:
        run = None
    if run is None:
        session.rollback()
        raise ApiError(409, "run_active", f"submission {sub.id} changed while re-running (another re-run was just "
                       "requested); look at it again")
    attempt = run.attempt
    record(session, actor=actor, action="submission.rerun", target_type="submission", target_id=sub.id,
           run_id=run.id, attempt=attempt, previous_state=previous.value)
    session.commit()
    note = _enqueue(session, settings, run)
    session.refresh(sub)
    return sub, note


def set_excluded(*, session: Session, actor: Member, submission_id: int, excluded: bool, reason: str) -> Submission:
    """Exclude a submission from ranking with a reason, or include it again (organizers)."""
    sub = get_visible_submission(session=session, member=actor, submission_id=submission_id)
    if excluded and not reason.strip():
        raise ApiError(422, "reason_required", "say why the submission is excluded (reason); participants see it")
    sub.excluded = excluded
    sub.exclusion_reason = reason.strip() if excluded else ""
    record(session, actor=actor, action="submission.exclude" if excluded else "submission.include",
           target_type="submission", target_id=sub.id, reason=reason.strip(), team_id=sub.team_id,
           track_id=sub.track_id)
    session.commit()
    session.refresh(sub)
    return sub


def set_baseline(*, session: Session, actor: Member, submission_id: int, is_baseline: bool) -> Submission:
    """Mark or unmark a submission as a baseline row (organizers)."""
    sub = get_visible_submission(session=session, member=actor, submission_id=submission_id)
    sub.is_baseline = is_baseline
    record(session, actor=actor, action="submission.baseline", target_type="submission", target_id=sub.id,
           is_baseline=is_baseline)
    session.commit()
    session.refresh(sub)
    return sub


def organizer_view(*, session: Session, sub: Submission) -> schemas.SubmissionOrganizerView:
    """Everything about a submission: all runs, all case results, its audit events."""
    public = _submission_views(session, [sub], latest_runs(session, [sub.id]))[0]  # organizers: everything
    runs = list(session.scalars(select(Run).where(Run.submission_id == sub.id).order_by(Run.attempt)))
    cases = list(session.scalars(select(CaseResult).where(CaseResult.run_id.in_([r.id for r in runs]))
                                 .order_by(CaseResult.run_id, CaseResult.case_id))) if runs else []
    run_ids = [str(r.id) for r in runs]
    events = list(session.scalars(select(AuditEvent).where(
        ((AuditEvent.target_type == "submission") & (AuditEvent.target_id == str(sub.id)))
        | ((AuditEvent.target_type == "run") & (AuditEvent.target_id.in_(run_ids)))).order_by(AuditEvent.id)))
    return schemas.SubmissionOrganizerView(
        **public.model_dump(), archive_path=sub.archive_path, description=sub.description,
        runs=[schemas.RunAudit.model_validate(r) for r in runs],
        cases=[schemas.CaseResultAudit.model_validate(c) for c in cases],
        audit=[schemas.AuditEventPublic.model_validate(e) for e in events],
    )


# ---------------------------------------------------------------------------------------------
# archive retention (called by the periodic reaper)
# ---------------------------------------------------------------------------------------------
RETENTION_STATES = (SubmissionState.cancelled, SubmissionState.failed)


def delete_expired_archives(*, settings, now: datetime | None = None) -> list[int]:
    """Delete the image archives of cancelled and failed submissions that ended over ``archive_retention_h``
    hours ago (succeeded ones keep theirs), setting ``archive_deleted_at``; returns those submissions' ids.

    A file another submission still uses (same ``archive_path``) is kept; only files inside the storage
    directory are deleted. A submission is marked before its file goes, conditionally on its state, so a
    concurrent re-run either wins (and the archive stays) or is refused."""
    now = now or utcnow()
    cutoff = now - timedelta(hours=settings.archive_retention_h)
    storage = Storage(settings.storage_dir)
    root = Path(settings.storage_dir).resolve()
    ended = func.coalesce(Submission.finished_at, Submission.cancelled_at, Submission.updated_at)
    with _session(settings) as s:
        due: list[tuple[int, str]] = [(sid, path) for sid, path in s.execute(
            select(Submission.id, Submission.archive_path).where(
                Submission.state.in_(RETENTION_STATES), Submission.archive_deleted_at.is_(None),
                Submission.archive_path != "", ended <= cutoff).order_by(Submission.id)).all()]
        if not due:
            return []
        ids = [sid for sid, _ in due]
        active = set(s.scalars(select(Run.submission_id).where(Run.submission_id.in_(ids),
                                                                Run.state.in_(ACTIVE_RUN_STATES))))
        due = [(sid, path) for sid, path in due if sid not in active]
        due_ids = {sid for sid, _ in due}
        shared = set(s.scalars(select(Submission.archive_path).where(
            Submission.archive_path.in_(sorted({path for _, path in due})), Submission.archive_deleted_at.is_(None),
            Submission.id.not_in(sorted(due_ids))))) if due else set()
    store = Storage.from_settings(settings)
    deleted: list[int] = []
    for sid, rel in due:
        if rel in shared:
            continue  # another submission still uses this file
        if not getattr(store, "local", True):  # object storage: the archive path is the object's key
            with _session(settings) as s:
                if affected_rows(s.execute(update(Submission).where(
                        Submission.id == sid, Submission.state.in_(RETENTION_STATES),
                        Submission.archive_deleted_at.is_(None)).values(archive_deleted_at=now))):
                    record(s, actor=None, action="submission.archive_deleted", target_type="submission",
                           target_id=sid, archive_path=rel, retention_h=settings.archive_retention_h)
                    s.commit()
                    store.delete(rel)
                    deleted.append(sid)
            continue
        try:
            path = Path(rel) if Path(rel).is_absolute() else storage.resolve(rel)
        except Exception:
            continue
        if not path.resolve().is_relative_to(root):
            continue
        with _session(settings) as s:
            marked = affected_rows(s.execute(update(Submission).where(
                Submission.id == sid, Submission.state.in_(RETENTION_STATES), Submission.archive_deleted_at.is_(None))
                .values(archive_deleted_at=now)))
            if not marked:
                s.rollback()
                continue
            record(s, actor=None, action="submission.archive_deleted", target_type="submission", target_id=sid,
                   archive_path=rel, retention_h=settings.archive_retention_h)
            s.commit()
        Storage.remove(path)
        if path.parent.resolve() != root:
            try:
                path.parent.rmdir()  # images/<id>/ once empty
            except OSError:
                pass
        deleted.append(sid)
    if deleted:
        log.info("deleted the archives of %d cancelled or failed submissions: %s", len(deleted), deleted)
    return deleted
