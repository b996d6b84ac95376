"""Shards: splitting a run, sending one broker message per queued shard, fair claims with leases, the
runtime bookkeeping the single-host runner did (run/submission states, worker host fields), the shard
reaper and cancel. See docs/worker-protocol.md.

Atomicity: a claim is an ``UPDATE shards SET state='running', lease=… WHERE id=… AND state='queued'`` (one
winner on SQLite and PostgreSQL); a requeue is conditional on the old lease; finishing a run is conditional
on its state (see :mod:`api.execution.scoring`).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import statistics
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case as sa_case
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from api.audit import record
from api.db import affected_rows, session_scope
from api.errors import ApiError
from api.lifecycle import ACTIVE_RUN_STATES, transition
from api.models import (
    CaseResult, Run, RunState, Shard, ShardState, Submission, SubmissionState, Track, WorkerNode, utcnow,
)
from api.params import as_utc
from api.storage import Storage
from evaluator.failures import run_time_limit
from evaluator.io import bound_text

from .contract import RUN_SHARD_TASK, SCORE_QUEUE, SCORE_TASK
from .identity import WorkerIdentity
from .testsets import load_testset

__all__ = ["split_run", "shard_sizes", "online_workers", "send_shards", "enqueue_run_sharded", "auto_shard_size",
           "claim_shard", "held_shard", "shard_cancelled", "heartbeat", "finish_shard", "requeue_shard",
           "cancel_submission_shards", "cancel_running_shards", "reap_shards", "enforce_total_limits",
           "send_score", "new_lease", "ACTOR"]

log = logging.getLogger(__name__)

ACTOR = "trusted:execution"
_RECENT_CASES = 200  # case times the auto shard size looks at
_MAX_SHARD_CASES = 1000


def new_lease() -> str:
    return secrets.token_urlsafe(24)


def _reason_limit(settings: Any) -> int:
    return int(getattr(settings, "reason_max_chars", 2000))


# --------------------------------------------------------------------------------------------- splitting


def auto_shard_size(session: Session, track: Track, settings: Any) -> int:
    """Cases per shard: the track's ``shard_size``, else about ``shard_target_s`` of work estimated from the median
    wall time (else runtime) of the track's most recent cases, else ``shard_default_cases``."""
    if (track.shard_size or 0) > 0:
        return int(track.shard_size)
    rows = session.execute(
        select(CaseResult.wall_s, CaseResult.runtime_s)
        .join(Run, Run.id == CaseResult.run_id).join(Submission, Submission.id == Run.submission_id)
        .where(Submission.track_id == track.id).order_by(CaseResult.id.desc()).limit(_RECENT_CASES)
    ).all()
    times = [float(w if w is not None else r) for w, r in rows if (w if w is not None else r)]
    times = [t for t in times if t > 0]
    if not times:
        return int(settings.shard_default_cases)
    median = statistics.median(times)
    return max(1, min(_MAX_SHARD_CASES, round(float(settings.shard_target_s) / median)))


def shard_sizes(cases: int, size: int, workers: int = 1) -> list[int]:
    """Sizes of the shards of ``cases`` cases: at most ``size`` each and as few shards as that allows; when that is
    at least ``workers`` shards, their count is rounded up to a multiple of ``workers`` (never past one case per
    shard); the sizes differ by at most one, the larger first. With dynamic claims the workers of a queue then take
    equal shares and finish together (27 cases of at most 3 on 2 workers: 10 shards 3,3,3,3,3,3,3,2,2,2 -> 14 and
    13 cases, not 9 shards -> 15 and 12). A run that fits in fewer shards than there are workers keeps its count
    (a track whose shard size exceeds its runs wants one shard per run)."""
    if cases <= 0:
        return []
    size = max(1, int(size))
    count = -(-cases // size)
    if workers > 1 and count >= workers and count % workers:
        count = min(cases, -(-count // workers) * workers)
    base, extra = divmod(cases, count)
    return [base + 1] * extra + [base] * (count - extra)


def online_workers(session: Session, queue: str, settings: Any, now: datetime | None = None) -> int:
    """Execution workers serving ``queue`` seen within ``worker_online_s`` (hello, ping, claim, heartbeats)."""
    since = (now or utcnow()) - timedelta(seconds=float(settings.worker_online_s))
    rows = session.scalars(select(WorkerNode.queues).where(WorkerNode.last_seen_at >= since)).all()
    return sum(1 for q in rows if queue in (q or "").split(","))


def split_run(session: Session, run: Run, settings: Any) -> list[Shard]:
    """The run's shards (created once: a second call returns the existing ones). Cases already recorded for the
    run are left out; ``run.cases_total`` is set. Sizes: :func:`shard_sizes` over the workers online on the run's
    queue (``shard_balance``). The caller commits."""
    existing = session.scalars(select(Shard).where(Shard.run_id == run.id).order_by(Shard.index)).all()
    if existing:
        return list(existing)
    sub = session.get_one(Submission, run.submission_id)
    track = session.get_one(Track, sub.track_id)
    testset = run.testset or track.testset
    manifest, _root, _ = load_testset(testset, Storage.from_settings(settings))
    done = set(session.scalars(select(CaseResult.case_id).where(CaseResult.run_id == run.id)))
    ids = [c.id for c in manifest.cases if c.id not in done]
    size = auto_shard_size(session, track, settings)
    run.cases_total = len(manifest.cases)
    run.testset = run.testset or testset[:200]
    run.metric_profile = run.metric_profile or track.metric_profile or "default"
    now = utcnow()
    workers = online_workers(session, run.queue, settings, now) if getattr(settings, "shard_balance", True) else 1
    shards, start = [], 0
    for i, n in enumerate(shard_sizes(len(ids), size, workers)):
        shards.append(Shard(run_id=run.id, index=i, case_ids=ids[start:start + n], state=ShardState.queued,
                            queue=run.queue, created_at=now))
        start += n
    session.add_all(shards)
    session.flush()
    record(session, actor=None, actor_label=ACTOR, action="run.split", target_type="run", target_id=run.id,
           shards=len(shards), shard_size=size, cases=len(ids), workers_online=workers)
    return shards


def _sender(settings: Any):
    from .celery import sender_app

    return sender_app(settings)


def send_shards(session: Session, settings: Any, shards: list[Shard]) -> list[str]:
    """One ``segarena.run_shard(shard_id)`` message per queued shard on its queue; records the task ids (the
    caller commits). A shard whose message could not be sent keeps ``task_id=''``: the reaper sends it."""
    from api.queue import EnqueueError

    app = _sender(settings)
    ids: list[str] = []
    for shard in shards:
        if shard.state != ShardState.queued:
            continue
        try:
            result = app.send_task(RUN_SHARD_TASK, args=[shard.id], queue=shard.queue, retry=True,
                                   retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5,
                                                 "interval_max": 1.0})
        except Exception as exc:
            raise EnqueueError(f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from exc
        shard.task_id = str(result.id)[:64]
        ids.append(shard.task_id)
    return ids


def enqueue_run_sharded(settings: Any, run_id: int, queue: str | None = None) -> str:
    """Split run ``run_id`` into shards and send them; returns the first message's id ('' if none was sent).
    Raises ``api.queue.EnqueueError`` when the broker refused (the shards stay queued; the reaper re-sends)."""
    with session_scope(settings.database_url) as s:
        run = s.get(Run, run_id)
        if run is None:
            return ""
        shards = split_run(s, run, settings)
        s.commit()
        ids = send_shards(s, settings, shards)
        if not shards:  # nothing to run (every case recorded): finish now
            s.commit()
            from .scoring import maybe_finish_run

            maybe_finish_run(settings, run_id)
    return ids[0] if ids else ""


def send_score(settings: Any, case_result_id: int) -> str:
    result = _sender(settings).send_task(SCORE_TASK, args=[case_result_id], queue=SCORE_QUEUE, retry=True,
                                         retry_policy={"max_retries": 2, "interval_start": 0.2})
    return str(result.id)


# --------------------------------------------------------------------------------------------- claiming


def _node(session: Session, ident: WorkerIdentity, name: str) -> WorkerNode:
    node = session.scalar(select(WorkerNode).where(WorkerNode.name == name))
    if node is None:
        raise ApiError(409, "hello_first", f"worker {name[:200]!r} has not said hello: POST /api/worker/hello first")
    if node.member_id != ident.member_id:
        raise ApiError(403, "forbidden", f"worker name {name[:200]!r} belongs to another worker identity")
    return node


def _cases_spec(shard: Shard, index: dict[str, Any], done: set[str], track: Track | None = None) -> list[dict[str, Any]]:
    from .interactive import case_prompt_spec

    out = []
    for cid in shard.case_ids:
        if cid in done or cid not in index:
            continue
        c = index[cid]
        out.append({"id": cid, "file": c.input.path.rsplit("/", 1)[-1], "sha256": c.input.sha256,
                    "bytes": c.input.bytes, "url": f"/api/worker/shards/{shard.id}/inputs/{cid}",
                    **(case_prompt_spec(track, c) if track is not None else {})})
    return out


def _spec(session: Session, settings: Any, shard: Shard, cases: list[dict[str, Any]]) -> dict[str, Any]:
    from .interactive import interactive_spec

    run = session.get_one(Run, shard.run_id)
    sub = session.get_one(Submission, run.submission_id)
    track = session.get_one(Track, sub.track_id)
    return {
        "shard_id": shard.id, "lease": shard.lease, "run_id": run.id, "attempt": run.attempt,
        "submission_id": sub.id, "heartbeat_s": float(settings.shard_heartbeat_s),
        "image": {"sha256": sub.archive_sha256, "bytes": int(sub.archive_bytes), "image_id": sub.image_id,
                  "url": f"/api/worker/images/{sub.archive_sha256}"},
        "caps": {"cpus": float(track.cpus), "memory_mb": int(track.memory_mb), "gpus": int(track.gpus),
                 "case_timeout_s": run_time_limit(run.case_timeout_s, track.case_timeout_s),
                 "pids_limit": int(track.pids_limit),
                 "tmpfs_mb": int(track.tmpfs_mb), "allow_root": bool(track.allow_root),
                 "output_max_bytes": int(settings.output_max_bytes), "output_max_files": int(settings.output_max_files)},
        "cases": cases,
        # prompts and timing (api/challenges/track_settings.py); interactive: iterations and budget (docs/interactive.md)
        "prompt": track.prompt or "box", "timing": track.timing or "container",
        "interactive": interactive_spec(track),
        # the run's scoring profile: every check of an output on the host follows it (cvpr24/cvpr25 accept float and
        # negative segs, as the references scored them; default refuses them)
        "metric_profile": run.metric_profile or track.metric_profile or "default",
    }


def _candidates(session: Session, queue: str, limit: int = 32) -> list[tuple[int, int]]:
    """(shard id, run id) of the queue's queued shards, fairest first: the team whose latest shard was claimed
    least recently (never first), then the oldest shard."""
    last = (select(Submission.team_id.label("team_id"), func.max(Shard.claimed_at).label("last"))
            .select_from(Shard).join(Run, Run.id == Shard.run_id).join(Submission, Submission.id == Run.submission_id)
            .where(Shard.claimed_at.is_not(None)).group_by(Submission.team_id).subquery())
    q = (select(Shard.id, Shard.run_id)
         .join(Run, Run.id == Shard.run_id).join(Submission, Submission.id == Run.submission_id)
         .outerjoin(last, last.c.team_id == Submission.team_id)
         .where(Shard.state == ShardState.queued, Shard.queue == queue,
                Submission.state != SubmissionState.cancelled, Run.state.in_(ACTIVE_RUN_STATES))
         .order_by(sa_case((last.c.last.is_(None), 0), else_=1), last.c.last, Shard.created_at, Shard.id)
         .limit(limit))
    return [(r[0], r[1]) for r in session.execute(q).all()]


def claim_shard(settings: Any, ident: WorkerIdentity, *, name: str, queue: str) -> dict[str, Any] | None:
    """Claim the fairest queued shard of ``queue`` for worker ``name``; its spec, or None (nothing to do)."""
    if queue not in ident.queues:
        raise ApiError(403, "forbidden", f"this worker token may serve {', '.join(ident.queues) or 'no queue'}, "
                       f"not {queue[:32]!r}; ask the organizers for a token of that queue")
    url = settings.database_url
    with session_scope(url) as s:
        _node(s, ident, name).last_seen_at = utcnow()  # a claim says the worker is there (GET /api/status)
        _cancel_queued_of_cancelled(s)
    for _ in range(8):  # a few rounds: concurrent claimers take the same candidates
        with session_scope(url) as s:
            cands = _candidates(s, queue)
        if not cands:
            return None
        for shard_id, run_id in cands:
            now = utcnow()
            lease = new_lease()
            with session_scope(url) as s:
                won = affected_rows(s.execute(update(Shard).where(Shard.id == shard_id, Shard.state == ShardState.queued)
                                .values(state=ShardState.running, lease=lease, worker_name=name[:200], claimed_at=now,
                                        heartbeat_at=now, deliveries=Shard.deliveries + 1)
                                .execution_options(synchronize_session=False)))
                if won != 1:
                    continue
                s.commit()
                shard = s.get_one(Shard, shard_id)
                node = _node(s, ident, name)
                _first_claim(s, settings, run_id, node, now)
                run = s.get_one(Run, run_id)
                index = load_testset(run.testset or run.submission.track.testset, Storage.from_settings(settings))[2]
                done = set(s.scalars(select(CaseResult.case_id).where(CaseResult.run_id == run_id)))
                cases = _cases_spec(shard, index, done, run.submission.track)
                if not cases:  # every case was recorded by an earlier holder: the shard is done
                    shard.state, shard.finished_at, shard.lease = ShardState.done, now, ""
                    s.commit()
                    from .scoring import maybe_finish_run

                    maybe_finish_run(settings, run_id)
                    continue
                return _spec(s, settings, shard, cases)
    return None


def _first_claim(s: Session, settings: Any, run_id: int, node: WorkerNode, now: datetime) -> None:
    """Run ``queued → running`` at its first claim (:func:`api.lifecycle.transition`: started_at, the submission
    mirrored, ``run.running`` audited) with the worker's host fields; later claims only refresh the heartbeat."""
    started = transition(s, run_id, RunState.running, now=now, only_from=(RunState.queued, RunState.loading),
                         actor_label=f"worker:{node.name}",
                         run_fields=dict(heartbeat_at=now, worker_host=(node.host or node.name)[:200], worker_pid=node.pid,
                                         docker_version=(node.docker_version or "")[:100],
                                         cpu_model=(node.cpu_model or "")[:200]),
                         worker=node.name, host=node.host, cpu_model=node.cpu_model, calibration_s=node.calibration_s)
    if not started:
        s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=now)
                  .execution_options(synchronize_session=False))
    s.commit()


# --------------------------------------------------------------------------------------------- leases


def held_shard(s: Session, ident: WorkerIdentity, shard_id: int, lease: str) -> Shard:
    """The shard if ``lease`` is its current lease and the caller's identity holds it; else 404/409/403.

    A running shard, or a cancelled one (the caller is told to stop); a requeued or finished shard answers 409."""
    shard = s.get(Shard, shard_id)
    if shard is None:
        raise ApiError(404, "not_found", f"shard {shard_id} does not exist")
    if not lease or not shard.lease or not hmac.compare_digest(shard.lease.encode(), lease.encode()) \
            or shard.state not in (ShardState.running, ShardState.cancelled):
        raise ApiError(409, "lease_lost", f"shard {shard_id} is not held under this lease (it was requeued, finished "
                       "or never yours): stop working on it")
    node = s.scalar(select(WorkerNode).where(WorkerNode.name == shard.worker_name))
    if node is None or node.member_id != ident.member_id:
        raise ApiError(403, "forbidden", f"shard {shard_id} is held by another worker")
    return shard


def shard_cancelled(s: Session, shard: Shard) -> bool:
    """True when the holder should stop: the shard was cancelled, the submission cancelled, or the run is over."""
    if shard.state == ShardState.cancelled:
        return True
    row = s.execute(select(Run.state, Submission.state).join(Submission, Submission.id == Run.submission_id)
                    .where(Run.id == shard.run_id)).one()
    return row[0] not in ACTIVE_RUN_STATES or row[1] == SubmissionState.cancelled


def heartbeat(settings: Any, ident: WorkerIdentity, shard_id: int, lease: str) -> bool:
    """Refresh the shard's (and run's) heartbeat; returns cancel. 409 when the lease was lost."""
    with session_scope(settings.database_url) as s:
        shard = held_shard(s, ident, shard_id, lease)
        now = utcnow()
        s.execute(update(Shard).where(Shard.id == shard.id, Shard.lease == lease).values(heartbeat_at=now)
                  .execution_options(synchronize_session=False))
        s.execute(update(Run).where(Run.id == shard.run_id, Run.state.in_(ACTIVE_RUN_STATES)).values(heartbeat_at=now)
                  .execution_options(synchronize_session=False))
        s.execute(update(WorkerNode).where(WorkerNode.name == shard.worker_name).values(last_seen_at=now)
                  .execution_options(synchronize_session=False))
        return shard_cancelled(s, shard)


def finish_shard(settings: Any, ident: WorkerIdentity, shard_id: int, lease: str, outcome: str, reason: str) -> bool:
    """``done``: the shard is done (or cancelled, if its submission was); ``infra``: requeued with a new message.
    Returns cancel. Finishes the run when this was its last shard and every case is scored."""
    limit = _reason_limit(settings)
    with session_scope(settings.database_url) as s:
        shard = held_shard(s, ident, shard_id, lease)
        run_id = shard.run_id
        cancel = shard_cancelled(s, shard)
        now = utcnow()
        if outcome == "infra" and not cancel:
            requeue_shard(s, settings, shard, reason=bound_text(f"infrastructure failure on {shard.worker_name}: "
                                                               f"{reason}", limit), actor=f"worker:{shard.worker_name}")
            s.commit()
            _send_requeued(settings, [shard.id])
            return False
        state = ShardState.cancelled if cancel else ShardState.done
        s.execute(update(Shard).where(Shard.id == shard.id, Shard.lease == lease)
                  .values(state=state, finished_at=now, heartbeat_at=now,
                          reason=bound_text(reason, limit) if outcome == "infra" else shard.reason)
                  .execution_options(synchronize_session=False))
    from .scoring import maybe_finish_run

    maybe_finish_run(settings, run_id)
    return cancel


def requeue_shard(s: Session, settings: Any, shard: Shard, *, reason: str, actor: str) -> bool:
    """Back to ``queued`` under no lease (the old holder's calls get 409); the caller commits, then sends its
    message (``_send_requeued``). After ``max_attempts`` deliveries the run fails instead (not the team's fault)."""
    old = shard.lease
    if shard.deliveries >= int(settings.max_attempts):
        s.execute(update(Shard).where(Shard.id == shard.id, Shard.lease == old)
                  .values(state=ShardState.lost, lease="", reason=reason, finished_at=utcnow())
                  .execution_options(synchronize_session=False))
        record(s, actor=None, actor_label=actor, action="shard.lost", target_type="run", target_id=shard.run_id,
               submission_id=_submission_of(s, shard.run_id), shard_id=shard.id, index=shard.index,
               deliveries=shard.deliveries, reason=reason)
        from .scoring import stop_run

        stop_run(s, settings, shard.run_id, infra=(
            f"infrastructure failure on all {shard.deliveries} deliveries of shard {shard.index} (last: {reason}); "
            "this is not your fault: the organizers have been notified, re-run it later"))
        return False
    done = affected_rows(s.execute(update(Shard).where(Shard.id == shard.id, Shard.lease == old,
                                                       Shard.state == ShardState.running)
                     .values(state=ShardState.queued, lease="", task_id="", reason=reason, heartbeat_at=None)
                     .execution_options(synchronize_session=False)))
    if done == 1:
        record(s, actor=None, actor_label=actor, action="shard.requeued", target_type="run", target_id=shard.run_id,
               submission_id=_submission_of(s, shard.run_id), shard_id=shard.id, index=shard.index,
               worker=shard.worker_name, deliveries=shard.deliveries, reason=reason)
    return done == 1


def _submission_of(s: Session, run_id: int) -> int | None:
    return s.scalar(select(Run.submission_id).where(Run.id == run_id))


def _send_requeued(settings: Any, shard_ids: list[int]) -> None:
    if not shard_ids:
        return
    with session_scope(settings.database_url) as s:
        shards = s.scalars(select(Shard).where(Shard.id.in_(shard_ids), Shard.state == ShardState.queued)).all()
        try:
            send_shards(s, settings, list(shards))
        except Exception as exc:
            log.warning("could not send shards %s: %s", shard_ids, exc)


# --------------------------------------------------------------------------------------------- cancel and reaper


def cancel_submission_shards(session: Session, submission_id: int, *, now: datetime | None = None) -> int:
    """The submission's queued shards become cancelled now (their messages are no-ops); running ones learn it at
    their next heartbeat or upload. The caller commits."""
    now = now or utcnow()
    runs = select(Run.id).where(Run.submission_id == submission_id).scalar_subquery()
    return affected_rows(session.execute(update(Shard).where(Shard.run_id.in_(runs), Shard.state == ShardState.queued)
                           .values(state=ShardState.cancelled, finished_at=now, reason="the submission was cancelled")
                           .execution_options(synchronize_session=False)))


def cancel_running_shards(session: Session, submission_id: int, *, now: datetime | None = None) -> int:
    """The submission's running shards become cancelled (their lease kept): the holder's next heartbeat or upload
    answers ``cancel: true`` and it kills its container; its uploads are no longer recorded. The caller commits."""
    now = now or utcnow()
    runs = select(Run.id).where(Run.submission_id == submission_id).scalar_subquery()
    return affected_rows(session.execute(update(Shard).where(Shard.run_id.in_(runs), Shard.state == ShardState.running)
                           .values(state=ShardState.cancelled, finished_at=now, reason="the submission was cancelled")
                           .execution_options(synchronize_session=False)))


def _cancel_queued_of_cancelled(s: Session) -> list[int]:
    """Queued shards of cancelled submissions or finished runs → cancelled; returns their runs."""
    rows = s.execute(select(Shard.id, Shard.run_id).join(Run, Run.id == Shard.run_id)
                     .join(Submission, Submission.id == Run.submission_id)
                     .where(Shard.state == ShardState.queued,
                            (Submission.state == SubmissionState.cancelled) | Run.state.not_in(ACTIVE_RUN_STATES))).all()
    if rows:
        s.execute(update(Shard).where(Shard.id.in_([r[0] for r in rows]), Shard.state == ShardState.queued)
                  .values(state=ShardState.cancelled, finished_at=utcnow(), reason="the submission was cancelled")
                  .execution_options(synchronize_session=False))
    return sorted({r[1] for r in rows})


def _broker_waiting(app: Any, queue: str) -> int:
    """Messages waiting in ``queue`` on the broker (0 when the broker does not know the queue: it restarted
    without its data). Raises when the broker cannot be reached."""
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        try:
            _name, waiting, _consumers = conn.default_channel.queue_declare(queue=queue, passive=True)
        except conn.channel_errors:
            return 0
        return int(waiting or 0)


def _resend_lost_messages(settings: Any, *, exclude: set[int]) -> list[int]:
    """Queued shards whose message the broker lost (e.g. Redis restarted without persistence): per queue, when the
    broker holds fewer waiting messages than there are queued shards, the oldest shards get a new message each
    (a message is a claim of the queue's fairest shard: a spare one is a no-op)."""
    with session_scope(settings.database_url) as s:
        rows = s.execute(select(Shard.id, Shard.queue).where(Shard.state == ShardState.queued, Shard.task_id != "")
                         .order_by(Shard.created_at, Shard.id)).all()
        by_queue: dict[str, list[int]] = {}
        for sid, queue in rows:
            if sid not in exclude:
                by_queue.setdefault(queue, []).append(sid)
        if not by_queue:
            return []
        app = _sender(settings)
        missing: list[int] = []
        for queue, ids in by_queue.items():
            try:
                waiting = _broker_waiting(app, queue)
            except Exception as exc:
                log.warning("cannot count the messages of queue %s: %s", queue, exc)
                continue
            missing.extend(ids[: max(0, len(ids) - waiting)])
        if not missing:
            return []
        shards = s.scalars(select(Shard).where(Shard.id.in_(missing))).all()
        try:
            send_shards(s, settings, list(shards))
        except Exception as exc:
            log.warning("could not re-send shards %s: %s", missing, exc)
            return []
        s.commit()
        log.warning("re-sent %d shard message(s) the broker no longer held: %s", len(missing), missing)
        return sorted(missing)


def _total_limit_reason(s: Session, run: Run, limit_s: float, elapsed_s: float) -> tuple[str, str]:
    """(stopped, infra): the reason a run past its total time limit ends with; ``infra`` when its shards were
    requeued (workers lost or failing: not the team's fault), else ``stopped`` (its own cases took the time)."""
    scored = s.scalar(select(func.count()).select_from(CaseResult)
                      .where(CaseResult.run_id == run.id, CaseResult.scored.is_(True))) or 0
    requeues = s.scalar(select(func.coalesce(func.sum(Shard.deliveries - 1), 0))
                        .where(Shard.run_id == run.id, Shard.deliveries > 1)) or 0
    head = (f"total time limit ({limit_s:g} s) reached after {elapsed_s:.0f} s: {scored} of {run.cases_total} "
            "cases were run, the rest were not run")
    if requeues:
        return "", (f"{head}; its shards were requeued {requeues} time(s) (workers lost or failing): this is not your "
                    "fault: the organizers have been notified, re-run it later")
    return f"{head}; make the model faster or ask the organizers about the limit", ""


def enforce_total_limits(settings: Any, *, now: datetime | None = None) -> list[int]:
    """End the running runs whose track's total time limit (``Track.total_timeout_s``, from the run's start: its
    first claim) has passed: ``failed`` with the reason (``infra`` wording when its shards were requeued), their
    open shards cancelled (holders kill their containers at the next heartbeat). Returns the runs ended."""
    from .scoring import _refresh_board, stop_run

    now = now or utcnow()
    ended: list[int] = []
    with session_scope(settings.database_url) as s:
        rows = s.execute(select(Run, Track.total_timeout_s).join(Submission, Submission.id == Run.submission_id)
                         .join(Track, Track.id == Submission.track_id)
                         .where(Run.state.in_(ACTIVE_RUN_STATES), Run.started_at.is_not(None),
                                Run.id.in_(select(Shard.run_id).distinct()))).all()
        for run, limit_s in rows:
            if not limit_s or limit_s <= 0:
                continue
            elapsed = (now - (as_utc(run.started_at) or now)).total_seconds()
            if elapsed <= float(limit_s):
                continue
            stopped, infra = _total_limit_reason(s, run, float(limit_s), elapsed)
            if stop_run(s, settings, run.id, stopped=stopped, infra=infra):
                record(s, actor=None, actor_label="trusted:reaper", action="run.total_timeout", target_type="run",
                       target_id=run.id, limit_s=float(limit_s), elapsed_s=round(elapsed, 1), infra=bool(infra))
                s.commit()
                ended.append(run.id)
                log.warning("run %s: total time limit %s s passed after %.0f s: ended", run.id, limit_s, elapsed)
    if ended:
        _refresh_board()
    return ended


def reap_shards(settings: Any, *, now: datetime | None = None, send: bool = True) -> dict[str, list[int]]:
    """One pass of the shard reaper (trusted beat; tests call it directly):

    - queued shards of cancelled submissions → cancelled;
    - running shards whose heartbeat is older than ``heartbeat_timeout_s`` → cancelled if their submission was
      cancelled, else requeued under a new lease with a new message (the old holder gets 409);
    - queued shards without a message (the broker was down) → sent;
    - queued shards whose message the broker lost (fewer messages waiting than queued shards) → sent again;
    - uploaded outputs left unscored for ``heartbeat_timeout_s`` → their score message sent again;
    - runs whose last shard this ended → finished;
    - running runs past their track's total time limit → failed (:func:`enforce_total_limits`).
    """
    now = now or utcnow()
    stale_before = now - timedelta(seconds=float(settings.heartbeat_timeout_s))
    out: dict[str, list[int]] = {"cancelled": [], "requeued": [], "sent": [], "resent": [], "rescored": [],
                                 "timed_out": enforce_total_limits(settings, now=now)}
    touched: set[int] = set()
    with session_scope(settings.database_url) as s:
        touched.update(_cancel_queued_of_cancelled(s))
        stale = s.scalars(select(Shard).where(Shard.state == ShardState.running, Shard.heartbeat_at < stale_before)).all()
        for shard in stale:
            if shard_cancelled(s, shard):
                s.execute(update(Shard).where(Shard.id == shard.id, Shard.lease == shard.lease)
                          .values(state=ShardState.cancelled, lease="", finished_at=now)
                          .execution_options(synchronize_session=False))
                out["cancelled"].append(shard.id)
                touched.add(shard.run_id)
                continue
            age = (now - (as_utc(shard.heartbeat_at) or now)).total_seconds()
            if requeue_shard(s, settings, shard, actor="trusted:reaper",
                             reason=f"worker {shard.worker_name} lost: no heartbeat for {age:.0f} s "
                                    f"(SEGARENA_HEARTBEAT_TIMEOUT_S={settings.heartbeat_timeout_s})"):
                out["requeued"].append(shard.id)
            touched.add(shard.run_id)
        s.commit()
        unsent = s.scalars(select(Shard.id).where(Shard.state == ShardState.queued, Shard.task_id == "")).all()
        unscored = s.scalars(select(CaseResult.id).join(Run, Run.id == CaseResult.run_id)
                             .where(CaseResult.scored.is_(False), CaseResult.created_at < stale_before,
                                    Run.state != RunState.cancelled)).all()  # a cancelled run is not scored
    if send:
        _send_requeued(settings, list(unsent))
        out["sent"] = list(unsent)
        out["resent"] = _resend_lost_messages(settings, exclude=set(unsent))
        for cid in unscored:
            try:
                send_score(settings, cid)
                out["rescored"].append(cid)
            except Exception as exc:
                log.warning("could not send score task for case result %s: %s", cid, exc)
    from .scoring import maybe_finish_run

    for run_id in sorted(touched):
        maybe_finish_run(settings, run_id)
    return out
