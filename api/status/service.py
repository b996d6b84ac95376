"""Queue status and queue positions, computed from the runs and shards tables and the worker nodes.

Position follows the fair shard claim of the trusted side (:func:`api.execution.shards.claim_shard`): among the
queued shards of a queue (cancelled submissions left out), the next claim takes a shard of the team whose latest
shard was *claimed* least recently (never first), then the oldest shard, then the lowest id; the claimed team then
counts as just claimed. :func:`claim_order` replays those claims one by one, so a team with three queued runs
interleaves with the others as the workers will take them; a run's position is the rank of its first shard's claim
among the runs (a queued run not split yet counts as one shard created with the run). Approximations, said in
the API's ``how``: shards that arrive later may overtake (a team that has not run for longer comes first).

Workers are the ``worker_nodes`` rows the worker routes keep fresh (``hello``, ``ping`` every
``SEGARENA_WORKER_HEARTBEAT_S`` on the execution host, ``claim``, shard heartbeats); one seen within
``SEGARENA_WORKER_ONLINE_S`` counts as online.
"""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.lifecycle import EXECUTING_RUN_STATES
from api.models import (
    Challenge,
    Run,
    RunState,
    Shard,
    ShardState,
    Submission,
    SubmissionState,
    Track,
    Visibility,
    WorkerNode,
    utcnow,
)
from api.params import as_utc
from api.status import schemas

__all__ = ["claim_order", "queue_status", "queue_position"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
RECENT_RUNS = 50


def claim_order(rows: list[tuple[int, datetime, int, int]], last_claimed: dict[int, datetime | None],
                stop_at: int | None = None) -> list[int]:
    """Run ids in the order the fair shard claim reaches them (each run once, at its first shard). ``rows``:
    (shard id, created_at, team id, run id) of the queued shards; ``last_claimed``: team id -> its latest shard
    claim. Stops once run ``stop_at`` is placed."""
    last = {team: as_utc(ts) for team, ts in last_claimed.items()}
    pending = [(sid, as_utc(created), team, rid) for sid, created, team, rid in rows]
    order: list[int] = []
    seen: set[int] = set()
    bump = 0
    while pending:
        best = min(pending, key=lambda r: (last.get(r[2]) or _EPOCH, r[1], r[0]))
        pending.remove(best)
        if best[3] not in seen:
            seen.add(best[3])
            order.append(best[3])
            if best[3] == stop_at:
                break
        bump += 1  # the claimed team has now claimed most recently of all
        last[best[2]] = datetime(9000, 1, 1, tzinfo=UTC) + timedelta(seconds=bump)
    return order


def _queued_rows(session: Session, queue: str) -> list[tuple[int, datetime, int, int]]:
    """Queued shards of the queue's queued runs, and each queued run not split yet as one pseudo-shard (negative
    id: after any real shard of the same age)."""
    live = (Run.state == RunState.queued, Run.queue == queue, Submission.state != SubmissionState.cancelled)
    shards: list[tuple[int, datetime, int, int]] = [(r[0], r[1], r[2], r[3]) for r in session.execute(
        select(Shard.id, Shard.created_at, Submission.team_id, Run.id)
        .join(Run, Run.id == Shard.run_id).join(Submission, Submission.id == Run.submission_id)
        .where(Shard.state == ShardState.queued, *live)).all()]
    has_shard = select(Shard.id).where(Shard.run_id == Run.id).exists()
    unsplit = [(10**12 + r[0], r[1], r[2], r[0]) for r in session.execute(
        select(Run.id, Run.created_at, Submission.team_id).join(Submission, Submission.id == Run.submission_id)
        .where(*live, ~has_shard)).all()]
    return shards + unsplit


def _last_claimed(session: Session) -> dict[int, datetime | None]:
    """Team id -> its latest shard claim (a run's started_at is its first shard's claim, so it never exceeds it;
    it counts for runs that have no shards)."""
    out = {team: as_utc(ts) for team, ts in session.execute(
        select(Submission.team_id, func.max(Shard.claimed_at)).select_from(Shard)
        .join(Run, Run.id == Shard.run_id).join(Submission, Submission.id == Run.submission_id)
        .where(Shard.claimed_at.is_not(None)).group_by(Submission.team_id)).all()}
    for team, ts in session.execute(
            select(Submission.team_id, func.max(Run.started_at)).join(Submission, Submission.id == Run.submission_id)
            .where(Run.started_at.is_not(None)).group_by(Submission.team_id)).all():
        when, current = as_utc(ts), out.get(team)
        if when is not None and (current is None or when > current):
            out[team] = when
    return out


def _median(values: list[float]) -> float | None:
    return round(float(statistics.median(values)), 1) if values else None


def _median_wait(session: Session, queue: str, now: datetime) -> tuple[float | None, int]:
    rows = session.execute(
        select(Run.created_at, Run.started_at).where(Run.queue == queue, Run.started_at.is_not(None),
                                                     Run.started_at >= now - timedelta(hours=24))
        .order_by(Run.started_at.desc()).limit(RECENT_RUNS)).all()
    waits = [max(0.0, (as_utc(s) - as_utc(c)).total_seconds()) for c, s in rows if c is not None and s is not None]
    return _median(waits), len(waits)


def _median_run(session: Session, queue: str) -> float | None:
    rows = session.execute(
        select(Run.started_at, Run.finished_at).where(
            Run.queue == queue, Run.started_at.is_not(None), Run.finished_at.is_not(None),
            Run.state.in_([RunState.succeeded, RunState.failed]))
        .order_by(Run.finished_at.desc()).limit(RECENT_RUNS)).all()
    return _median([max(0.0, (as_utc(f) - as_utc(s)).total_seconds()) for s, f in rows
                    if s is not None and f is not None])


def _workers(session: Session, now: datetime, settings) -> list[tuple[WorkerNode, bool]]:
    rows = session.scalars(select(WorkerNode).where(WorkerNode.last_seen_at >= now - timedelta(hours=24))
                           .order_by(WorkerNode.last_seen_at.desc())).all()
    window = timedelta(seconds=float(settings.worker_online_s))
    return [(w, as_utc(w.last_seen_at) >= now - window) for w in rows]


def _serves(worker: WorkerNode) -> list[str]:
    return [q for q in (worker.queues or "").split(",") if q]


def _online_counts(workers: list[tuple[WorkerNode, bool]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for w, online in workers:
        if online:
            for q in _serves(w):
                counts[q] = counts.get(q, 0) + 1
    return counts


def queue_status(session: Session, settings, *, organizer: bool) -> schemas.StatusPublic:
    """Every declared queue's length, runs in progress, workers online and median wait; the workers seen
    in the last 24 h (names and hosts for organizers only); a warning per track nobody serves."""
    now = utcnow()
    workers = _workers(session, now, settings)
    online = _online_counts(workers)
    declared = settings.declared_queues
    queued = dict(session.execute(
        select(Run.queue, func.count()).join(Submission, Submission.id == Run.submission_id)
        .where(Run.state == RunState.queued, Submission.state != SubmissionState.cancelled).group_by(Run.queue)).all())
    running = dict(session.execute(select(Run.queue, func.count()).where(Run.state.in_(EXECUTING_RUN_STATES))
                                   .group_by(Run.queue)).all())
    queues = []
    for name, kind in declared.items():
        wait, sampled = _median_wait(session, name, now)
        queues.append(schemas.QueueStatus(name=name, kind=kind, queued=queued.get(name, 0), running=running.get(name, 0),
                                          workers_online=online.get(name, 0), median_wait_s=wait, waits_sampled=sampled,
                                          median_run_s=_median_run(session, name)))
    warnings = []
    tracks = session.execute(select(Track, Challenge.slug).join(Challenge, Challenge.id == Track.challenge_id)
                             .order_by(Challenge.slug, Track.id)).all()
    for track, challenge in tracks:
        if not organizer and track.visibility == Visibility.hidden:
            continue
        waiting = queued.get(track.queue, 0) > 0 and (session.scalar(
            select(func.count()).select_from(Run).join(Submission, Submission.id == Run.submission_id)
            .where(Submission.track_id == track.id, Run.state == RunState.queued,
                   Submission.state != SubmissionState.cancelled)) or 0) > 0
        if not (_is_open(track, now) or waiting):
            continue
        if track.queue not in declared:
            message = (f"queue {track.queue!r} is not declared (SEGARENA_QUEUES); no worker will take its runs: "
                       f"declare it or move the track to a declared queue")
        elif online.get(track.queue, 0) == 0:
            message = (f"no worker online serves queue {track.queue!r}: its runs wait until one starts "
                       f"(segarena worker with SEGARENA_WORKER_QUEUES={track.queue})")
        else:
            continue
        warnings.append(schemas.TrackWarning(challenge=challenge, track=track.slug, queue=track.queue, message=message))
    return schemas.StatusPublic(queues=queues, workers=[_worker_public(w, ok, organizer) for w, ok in workers],
                                warnings=warnings, online_window_s=float(settings.worker_online_s), generated_at=now)


def _is_open(track: Track, now: datetime) -> bool:
    opens, closes = as_utc(track.opens_at), as_utc(track.closes_at)
    return (opens is None or opens <= now) and (closes is None or now < closes)


def _worker_public(w: WorkerNode, online: bool, organizer: bool) -> schemas.WorkerPublic:
    extra: dict[str, Any] = {}
    if organizer:
        extra = dict(name=w.name, host=w.host, pid=w.pid, started_at=as_utc(w.started_at))
    return schemas.WorkerPublic(kind=w.kind, queues=_serves(w), online=online, cores=w.cores, cpu_model=w.cpu_model,
                                last_seen_at=as_utc(w.last_seen_at), **extra)


def queue_position(session: Session, settings, run: Run | None) -> schemas.QueuePosition | None:
    """Where ``run`` stands in its queue and about how long it will wait; None unless it is queued."""
    if run is None or run.state != RunState.queued:
        return None
    now = utcnow()
    rows = _queued_rows(session, run.queue)
    order = claim_order(rows, _last_claimed(session), stop_at=run.id)
    if not order or order[-1] != run.id:
        return None  # its submission was cancelled: the workers skip it
    position = len(order)
    queued_runs = len({r[3] for r in rows})
    workers = _online_counts(_workers(session, now, settings)).get(run.queue, 0)
    median_run = _median_run(session, run.queue)
    estimate = round(position * median_run / workers, 1) if workers and median_run is not None else None
    how = (f"position in the workers' fair order (the team whose work was taken least recently first, then the "
           f"oldest submission; later arrivals from a team that has waited longer may overtake); estimate = position "
           f"{position} x median run {median_run if median_run is not None else '?'} s (latest {RECENT_RUNS} finished "
           f"runs of queue {run.queue!r}) / {workers} worker(s) online")
    if not workers:
        how += f"; no worker online serves queue {run.queue!r}, so no estimate"
    elif median_run is None:
        how += f"; no finished run on queue {run.queue!r} yet to measure, so no estimate"
    return schemas.QueuePosition(queue=run.queue, position=position, queued=queued_runs, workers_online=workers,
                                 median_run_s=median_run, estimate_s=estimate, how=how)
