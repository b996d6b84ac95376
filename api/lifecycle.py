"""The job lifecycle: which run states there are, which changes are legal, and the one place a state changes.

Every run state change goes through :func:`transition` (grand-challenge's ``update_status`` idea): it checks the
change against :data:`RUN_TRANSITIONS`, flips the run with a conditional ``UPDATE`` (of two concurrent callers one
wins; the other gets ``False``), sets the run's timestamps, mirrors the state onto the submission when the run is
its latest attempt, and records the audit event ``run.<new state>`` — all in the caller's transaction. A submission
is cancelled with :func:`cancel_submission_runs` and gets a new attempt with :func:`new_attempt`, both here too.

Audit events written here (``target_type="run"``, ``target_id`` the run id), the contract notifications read:

- ``run.<state>`` (``run.running``, ``run.succeeded``, ``run.failed``, ``run.cancelled``, ...): details
  ``submission_id``, ``attempt``, ``previous`` (the old state), ``reason`` (why; ``""`` when there is nothing to
  say), plus what the caller adds (``cases``/``failed``/``infra`` when a run ends, ``worker``/``host``/... when it
  starts).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import Subquery

from api.audit import record
from api.models import Member, Run, RunState, Submission, SubmissionState, utcnow

__all__ = [
    "ACTIVE_RUN_STATES", "EXECUTING_RUN_STATES", "FINAL_RUN_STATES", "RUN_TRANSITIONS", "CANCELLABLE_SUBMISSION_STATES",
    "IllegalTransition", "transition", "check_transition", "cancel_submission_runs", "new_attempt",
    "latest_attempt_subquery", "latest_attempts", "latest_runs", "is_latest_attempt",
]

log = logging.getLogger(__name__)

#: not finished yet: queued, or holding (or about to hold) a worker
ACTIVE_RUN_STATES: frozenset[RunState] = frozenset(
    {RunState.queued, RunState.loading, RunState.running, RunState.scoring})
#: started and not finished: a worker has it (queue status counts these as "running")
EXECUTING_RUN_STATES: frozenset[RunState] = frozenset({RunState.loading, RunState.running, RunState.scoring})
#: nothing changes a run in these states (a re-run is a new attempt, a new Run row)
FINAL_RUN_STATES: frozenset[RunState] = frozenset(RunState) - ACTIVE_RUN_STATES
#: a submission in these states can be cancelled
CANCELLABLE_SUBMISSION_STATES: frozenset[SubmissionState] = frozenset(
    {SubmissionState.queued, SubmissionState.loading, SubmissionState.running, SubmissionState.scoring})

_ENDS = frozenset({RunState.succeeded, RunState.failed, RunState.infra_failed, RunState.cancelled})
#: run state -> the states it may change to. A final state changes to nothing.
RUN_TRANSITIONS: Mapping[RunState, frozenset[RunState]] = {
    RunState.queued: frozenset({RunState.loading, RunState.running}) | _ENDS,
    RunState.loading: frozenset({RunState.running}) | _ENDS,
    RunState.running: frozenset({RunState.scoring}) | _ENDS,
    RunState.scoring: _ENDS,
    **{s: frozenset() for s in FINAL_RUN_STATES},
}


class IllegalTransition(RuntimeError):
    """A state change the transition table forbids (a bug in the caller, not a race: races return False)."""

    def __init__(self, run_id: int | None, current: RunState, new: RunState) -> None:
        allowed = ", ".join(sorted(s.value for s in RUN_TRANSITIONS[current])) or "nothing: it is final"
        super().__init__(f"run {run_id}: {current.value} -> {new.value} is not a legal state change "
                         f"(from {current.value} a run may become {allowed}); a finished run is re-run as a "
                         "new attempt (api.lifecycle.new_attempt)")
        self.run_id, self.current, self.new = run_id, current, new


def check_transition(current: RunState, new: RunState, run_id: int | None = None) -> None:
    """Raise :class:`IllegalTransition` unless ``current -> new`` is in :data:`RUN_TRANSITIONS`."""
    if new not in RUN_TRANSITIONS[current]:
        raise IllegalTransition(run_id, current, new)


def _rowcount(result: Any) -> int:
    """Rows an UPDATE changed (SQLAlchemy types ``execute``'s result as a plain Result)."""
    return int(getattr(result, "rowcount", 0) or 0)


def _submission_state(state: RunState) -> SubmissionState:
    # infrastructure failures are retried as new attempts; to the team the submission failed meanwhile
    return SubmissionState.failed if state == RunState.infra_failed else SubmissionState(state.value)


def latest_attempt_subquery(submission_ids: Iterable[int] | None = None) -> Subquery:
    """The one latest-attempt query: rows ``(submission_id, attempt)``, the highest attempt of each submission
    (of ``submission_ids``, or all). Join it to ``Run`` on both columns for the latest runs."""
    stmt = select(Run.submission_id.label("submission_id"), func.max(Run.attempt).label("attempt"))
    if submission_ids is not None:
        stmt = stmt.where(Run.submission_id.in_(list(submission_ids)))
    return stmt.group_by(Run.submission_id).subquery()


def latest_attempts(session: Session, submission_ids: Iterable[int]) -> dict[int, int]:
    """``submission id -> its latest attempt number`` (submissions without a run are left out)."""
    ids = list(submission_ids)
    if not ids:
        return {}
    latest = latest_attempt_subquery(ids)
    rows = cast("list[tuple[int, int]]", session.execute(select(latest.c.submission_id, latest.c.attempt)).all())
    return {int(sid): int(n) for sid, n in rows}


def latest_runs(session: Session, submission_ids: Iterable[int]) -> dict[int, Run]:
    """``submission id -> its latest attempt's Run`` (the one the submission mirrors), in one query."""
    ids = list(submission_ids)
    if not ids:
        return {}
    latest = latest_attempt_subquery(ids)
    runs = session.scalars(select(Run).join(latest, (Run.submission_id == latest.c.submission_id)
                                            & (Run.attempt == latest.c.attempt)))
    return {r.submission_id: r for r in runs}


def is_latest_attempt(session: Session, run: Run) -> bool:
    return latest_attempts(session, [run.submission_id]).get(run.submission_id) == run.attempt


def transition(session: Session, run: Run | int, new: RunState, *, reason: str = "",
               actor: Member | None = None, actor_label: str | None = None, now: datetime | None = None,
               only_from: Iterable[RunState] | None = None, run_fields: Mapping[str, Any] | None = None,
               totals: Mapping[str, Any] | None = None, mirror: bool = True, **detail: Any) -> bool:
    """Change run ``run`` to state ``new``; True when this call did it. The caller commits.

    - The change must be in :data:`RUN_TRANSITIONS` from the run's current state, else
      :class:`IllegalTransition`. With ``only_from``, a run whose current state is not one of those is left
      alone (returns False): callers that may race a finisher (scorer, reaper, cancel) say what they expect.
    - The flip is a conditional ``UPDATE … WHERE state = <current>``: of two concurrent callers one wins.
    - Timestamps: leaving ``queued`` sets ``started_at`` (and ``heartbeat_at``); a final state sets ``finished_at``.
      ``run_fields`` are further run columns set with the flip (worker host, log tail, ...).
    - The submission mirrors the state when ``run`` is its latest attempt (``mirror=False``: the caller already
      changed the submission): a cancelled submission stays cancelled; starting clears its reason and totals;
      a final state sets its reason and ``finished_at`` and, with ``totals``, its aggregates.
    - The audit event ``run.<new>`` with ``submission_id``, ``attempt``, ``previous``, ``reason`` and ``detail``.
    """
    row = session.get(Run, run) if isinstance(run, int) else run
    if row is None:
        raise LookupError(f"run {run} does not exist")
    allowed_from = None if only_from is None else frozenset(only_from)
    if allowed_from is not None:
        for state in allowed_from:  # the caller's expectation itself must be legal
            check_transition(state, new, row.id)
    current = session.scalar(select(Run.state).where(Run.id == row.id))  # as committed now, not as cached
    if current is None:
        raise LookupError(f"run {row.id} does not exist")
    if allowed_from is not None and current not in allowed_from:
        return False
    check_transition(current, new, row.id)
    now = now or utcnow()
    values: dict[str, Any] = {"state": new, **(run_fields or {})}
    if reason or new in FINAL_RUN_STATES:
        values["reason"] = reason
    if current == RunState.queued and new not in FINAL_RUN_STATES:
        values.setdefault("started_at", now)
        values.setdefault("heartbeat_at", now)
    if new in FINAL_RUN_STATES:
        values.setdefault("finished_at", now)
    won = _rowcount(session.execute(update(Run).where(Run.id == row.id, Run.state == current).values(**values)
                                    .execution_options(synchronize_session=False)))
    if won != 1:
        return False
    session.refresh(row)
    if mirror:
        _mirror(session, row, new, reason=reason, now=now, started=current == RunState.queued, totals=totals)
    record(session, actor=actor, actor_label=actor_label, action=f"run.{new.value}", target_type="run",
           target_id=row.id, submission_id=row.submission_id, attempt=row.attempt, previous=current.value,
           reason=reason, **detail)
    log.info("run %s (submission %s, attempt %s): %s -> %s%s", row.id, row.submission_id, row.attempt,
             current.value, new.value, f" ({reason[:200]})" if reason else "")
    return True


def _mirror(session: Session, run: Run, new: RunState, *, reason: str, now: datetime, started: bool,
            totals: Mapping[str, Any] | None) -> None:
    if not is_latest_attempt(session, run):
        return  # an older attempt finishing late says nothing about the submission
    sub = session.get(Submission, run.submission_id)
    if sub is None:
        return
    session.refresh(sub)
    target = _submission_state(new)
    if sub.state == SubmissionState.cancelled:
        return  # a cancelled submission stays as its cancellation left it
    sub.state = target
    if new in FINAL_RUN_STATES:
        sub.reason, sub.finished_at = reason, now
        if target == SubmissionState.cancelled and sub.cancelled_at is None:
            sub.cancelled_at = now
        for key, value in (totals or {}).items():
            setattr(sub, key, value)
    elif started:
        sub.reason, sub.finished_at = "", None
        sub.dsc = sub.nsd = sub.runtime_s = None
        sub.aggregates = {}
        if run.metric_profile:
            sub.metric_profile = run.metric_profile
    sub.updated_at = now


def cancel_submission_runs(session: Session, sub: Submission, *, reason: str, actor: Member | None = None,
                           now: datetime | None = None) -> bool:
    """Cancel ``sub`` (if it is queued, loading, running or scoring) and every active run of it; False when it
    had already finished (the caller answers 409). The caller commits and stops the runs' shards."""
    now = now or utcnow()
    done = _rowcount(session.execute(
        update(Submission).where(Submission.id == sub.id, Submission.state.in_(CANCELLABLE_SUBMISSION_STATES))
        .values(state=SubmissionState.cancelled, reason=reason, finished_at=now, cancelled_at=now, updated_at=now)
        .execution_options(synchronize_session=False)))
    if not done:
        return False
    runs = session.scalars(select(Run).where(Run.submission_id == sub.id, Run.state.in_(ACTIVE_RUN_STATES))
                           .order_by(Run.attempt)).all()
    for run in runs:
        transition(session, run, RunState.cancelled, reason=reason, actor=actor, now=now,
                   only_from=ACTIVE_RUN_STATES, mirror=False)
    return True


def new_attempt(session: Session, sub: Submission, *, requested_by: str, now: datetime | None = None) -> Run | None:
    """A queued Run with the next attempt number, the submission back to ``queued`` (reason, totals and
    ``finished_at`` cleared); conditional on the submission's state as read, so of two concurrent re-runs one wins
    (None for the other, or when the submission has an active run). The caller records why and commits."""
    now = now or utcnow()
    if session.scalar(select(Run.id).where(Run.submission_id == sub.id, Run.state.in_(ACTIVE_RUN_STATES))
                      .limit(1)) is not None:
        return None
    attempt = latest_attempts(session, [sub.id]).get(sub.id, 0) + 1
    track = sub.track
    flipped = _rowcount(session.execute(
        update(Submission).where(Submission.id == sub.id, Submission.state == sub.state,
                                 Submission.archive_deleted_at.is_(None))
        .values(state=SubmissionState.queued, reason="", finished_at=None, updated_at=now, dsc=None, nsd=None,
                runtime_s=None, aggregates={})
        .execution_options(synchronize_session=False)))
    if not flipped:
        return None
    run = Run(submission_id=sub.id, attempt=attempt, state=RunState.queued, queue=track.queue,
              requested_by=requested_by[:100], metric_profile=track.metric_profile, testset=track.testset[:200],
              case_timeout_s=float(track.case_timeout_s), created_at=now)
    session.add(run)
    session.flush()
    return run
