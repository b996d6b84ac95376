"""Executing one run: claim it fairly, load the image, run every case in the sandbox, score, finish.

States (on both the Run and its Submission, which reflects its latest attempt):
``queued → loading → running → scoring → succeeded | failed(reason)``; ``cancelled`` when the
submission was cancelled (checked between cases). Infrastructure failures (engine unreachable,
storage error, worker lost) end the Run as ``infra_failed`` and enqueue a new Run (attempt + 1)
after a backoff, at most ``settings.max_attempts`` attempts; participant failures are final.

Fair order: messages are FIFO, so a task does not blindly run the id in its message; it claims the
fairest queued run of the same queue — the team whose latest run started least recently first,
then the oldest run — with an atomic ``UPDATE … WHERE state='queued'``. Each queued run has one
message, so the counts match; a message that finds nothing left to claim is a no-op.

Idempotence: case results are unique per (run, case); a case already recorded for the run is never
run or counted again.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from api.db import session_scope
from api.audit import record as record_audit
from api.models import (
    CaseResult,
    CaseStatus,
    Run,
    RunState,
    Submission,
    SubmissionState,
    Track,
    utcnow,
)

from evaluator.io import bound_text
from evaluator.runs import fail_fast_reason, summarize  # noqa: F401 (re-exported: summarize)

from . import sandbox as sb

__all__ = [
    "execute_run", "claim_run", "retry_or_fail", "backoff_s", "InfraError", "ParticipantError",
    "ACTIVE_RUN_STATES", "Sender", "celery_sender", "audit",
]

log = logging.getLogger("segarena.worker")

ACTIVE_RUN_STATES = (RunState.loading, RunState.running, RunState.scoring)
Sender = Callable[[int, str, float], None]  # (run id, queue, countdown seconds)


class InfraError(RuntimeError):
    """Not the participant's fault: the run is retried as a new attempt."""


class ParticipantError(RuntimeError):
    """The participant's fault: the run fails for good with this message as its reason."""


class Cancelled(RuntimeError):
    """The submission was cancelled."""


def aware(dt: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes: they are UTC."""
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt


def backoff_s(settings: Any, attempt: int) -> float:
    """Delay before attempt ``attempt`` may start (0 for the first; doubling, at most 5 min)."""
    if attempt <= 1:
        return 0.0
    base = float(settings.retry_backoff_s)
    return min(300.0, base * 2 ** (attempt - 2))


def audit(session, *, action: str, target: Run | Submission, actor: str, **details: Any) -> None:
    """Record an AuditEvent for a state change."""
    record_audit(session, actor=None, actor_label=actor, action=action,
           target_type="run" if isinstance(target, Run) else "submission", target_id=target.id, **details)


def celery_sender(settings: Any) -> Sender:
    """Send RUN_TASK through the settings' broker."""
    from .celery_app import RUN_TASK, make_celery

    app = make_celery(settings)

    def send(run_id: int, queue: str, countdown: float) -> None:
        app.send_task(RUN_TASK, args=[run_id], queue=queue, countdown=countdown or None)

    return send


# --------------------------------------------------------------------------------------------
# claiming


def claim_run(settings: Any, *, queue: str, worker: str, task_id: str = "", now: datetime | None = None) -> int | None:
    """Atomically claim the fairest eligible queued run of ``queue``; returns its id or None."""
    now = now or utcnow()
    url = settings.database_url
    with session_scope(url) as s:
        rows = s.execute(
            select(Run.id, Run.attempt, Run.created_at, Submission.team_id, Submission.state)
            .join(Submission, Submission.id == Run.submission_id)
            .where(Run.state == RunState.queued, Run.queue == queue)
            .order_by(Run.created_at, Run.id)
        ).all()
        if not rows:
            return None
        for rid, _a, _c, _t, sstate in rows:
            if sstate == SubmissionState.cancelled:
                run = s.get(Run, rid)
                if run is not None and run.state == RunState.queued:
                    run.state, run.reason, run.finished_at = RunState.cancelled, "the submission was cancelled", now
                    audit(s, action="run.cancelled", target=run, actor=worker, attempt=run.attempt)
        last = dict(s.execute(
            select(Submission.team_id, func.max(Run.started_at))
            .join(Submission, Submission.id == Run.submission_id)
            .where(Run.started_at.is_not(None))
            .group_by(Submission.team_id)
        ).all())
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    eligible = [r for r in rows if r[4] != SubmissionState.cancelled
                and aware(r[2]) + timedelta(seconds=backoff_s(settings, r[1])) <= now]
    eligible.sort(key=lambda r: (aware(last.get(r[3])) or epoch, aware(r[2]), r[0]))
    host, _, pid = worker.rpartition(":")
    for rid, *_ in eligible:
        with session_scope(url) as s:
            res = s.execute(
                update(Run).where(Run.id == rid, Run.state == RunState.queued)
                .values(state=RunState.loading, started_at=now, heartbeat_at=now, worker_host=host,
                        worker_pid=int(pid) if pid.isdigit() else None, task_id=task_id[:64])
                .execution_options(synchronize_session=False)
            )
            if res.rowcount == 1:
                return rid
    return None


# --------------------------------------------------------------------------------------------
# retry


def retry_or_fail(session, run: Run, *, reason: str, settings: Any, actor: str, now: datetime | None = None) -> int | None:
    """Mark ``run`` infra_failed; create attempt + 1 (returned) or fail the submission for good.

    The caller commits, then sends the new run's message (countdown :func:`backoff_s`).
    """
    now = now or utcnow()
    limit = _reason_limit(settings)
    reason = bound_text(reason, limit)
    sub = session.get(Submission, run.submission_id)
    previous = run.state.value
    run.state, run.reason, run.finished_at = RunState.infra_failed, reason, now
    audit(session, action="run.infra_failed", target=run, actor=actor, attempt=run.attempt, reason=reason,
          previous=previous)
    latest = session.execute(select(func.max(Run.attempt)).where(Run.submission_id == run.submission_id)).scalar_one()
    if sub is None or sub.state == SubmissionState.cancelled or latest != run.attempt:
        return None
    if run.attempt < settings.max_attempts:
        new = Run(submission_id=run.submission_id, attempt=run.attempt + 1, state=RunState.queued, queue=run.queue,
                  requested_by="retry", metric_profile=run.metric_profile, testset=run.testset, created_at=now)
        session.add(new)
        session.flush()
        sub.state = SubmissionState.queued
        sub.reason = bound_text(f"retrying after an infrastructure failure ({reason}); "
                                f"attempt {new.attempt} of {settings.max_attempts}", limit)
        audit(session, action="run.retry", target=new, actor=actor, attempt=new.attempt, after_run=run.id,
              backoff_s=backoff_s(settings, new.attempt))
        return new.id
    sub.state, sub.finished_at = SubmissionState.failed, now
    sub.reason = bound_text(f"infrastructure failure on all {run.attempt} attempts (last: {reason}); "
                            "this is not your fault: the organizers have been notified, re-run it later", limit)
    audit(session, action="submission.failed", target=sub, actor=actor, reason=sub.reason)
    return None


def _reason_limit(settings: Any) -> int:
    """The bound of every reason the worker stores (``settings.reason_max_chars``)."""
    from evaluator.io import REASON_MAX_CHARS

    return int(getattr(settings, "reason_max_chars", REASON_MAX_CHARS))


# --------------------------------------------------------------------------------------------
# execution


@dataclass
class _Plan:
    run_id: int
    submission_id: int
    attempt: int
    team_id: int
    image_id: str
    archive: Path
    profile: sb.SandboxProfile
    metric_profile: str
    testset: str
    total_timeout_s: float
    case_timeout_s: float
    fail_fast_cases: int = 3


class _Heartbeat:
    """Updates Run.heartbeat_at every ``interval`` seconds while the run is active."""

    def __init__(self, url: str, run_id: int, interval: float) -> None:
        self.url, self.run_id, self.interval = url, run_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run_id}", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        try:
            with session_scope(self.url) as s:
                s.execute(update(Run).where(Run.id == self.run_id, Run.state.in_(ACTIVE_RUN_STATES))
                          .values(heartbeat_at=utcnow()).execution_options(synchronize_session=False))
        except Exception as exc:  # noqa: BLE001 - a missed beat is retried; the reaper tolerates a few
            log.warning("heartbeat of run %s failed: %s", self.run_id, exc)

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _docker_version(client: Any) -> str:
    try:
        return str(client.version().get("Version", ""))
    except Exception:  # noqa: BLE001
        return ""


def _load_testset(name: str, storage: Any):
    """(manifest, data_root) of the track's test set (a built-in name or a manifest path)."""
    if name.endswith(".json"):
        try:
            from data_manifests import load_manifest
        except ImportError:
            from data_manifests.manifest import load_manifest

        path = Path(name)
        return load_manifest(path, data_root=path.parent), path.parent
    from data_manifests import materialize

    return materialize(name, storage.testset_dir(name))


def _truncate(text: str, limit: int = 140_000) -> str:
    return text if len(text) <= limit else text[: limit // 2] + "\n[...]\n" + text[-limit // 2:]


class _Execution:
    def __init__(self, settings: Any, run_id: int, *, client: Any = None, sender: Sender | None = None) -> None:
        from api.storage import Storage

        self.settings = settings
        self.url = settings.database_url
        self.run_id = run_id
        self.actor = f"worker:{sb.worker_identity()}"
        self._client = client
        self._sender = sender
        self.storage = Storage.from_settings(settings)

    # -- state helpers -------------------------------------------------------------------
    def _set_state(self, state: RunState, *, reason: str = "", **run_fields: Any) -> None:
        reason = bound_text(reason, _reason_limit(self.settings))
        with session_scope(self.url) as s:
            run = s.get(Run, self.run_id)
            sub = s.get(Submission, run.submission_id)
            previous = run.state.value
            run.state, run.reason = state, reason
            for k, v in run_fields.items():
                setattr(run, k, v)
            if state in (RunState.succeeded, RunState.failed, RunState.cancelled):
                run.finished_at = utcnow()
            latest = s.execute(select(func.max(Run.attempt)).where(Run.submission_id == run.submission_id)).scalar_one()
            if latest == run.attempt and sub.state != SubmissionState.cancelled:
                sub.state = SubmissionState(state.value)
                sub.reason = reason
                if state in (RunState.succeeded, RunState.failed):
                    sub.finished_at = run.finished_at
            audit(s, action=f"run.{state.value}", target=run, actor=self.actor, attempt=run.attempt,
                  previous=previous, reason=reason)

    def _cancelled(self) -> bool:
        with session_scope(self.url) as s:
            return s.execute(select(Submission.state).join(Run, Run.submission_id == Submission.id)
                             .where(Run.id == self.run_id)).scalar_one() == SubmissionState.cancelled

    def client(self):
        if self._client is None:
            self._client = sb.get_docker_client(self.settings)
        return self._client

    # -- the run -------------------------------------------------------------------------
    def plan(self) -> _Plan:
        with session_scope(self.url) as s:
            run = s.get(Run, self.run_id)
            sub = s.get(Submission, run.submission_id)
            track = s.get(Track, sub.track_id)
            parent = sb.CgroupMeter.usable_parent(f"segarena-{socket.gethostname()}-{os.getpid()}")
            profile = sb.SandboxProfile.from_track(track, self.settings, cgroup_parent=parent)
            archive = Path(sub.archive_path)
            if not archive.is_absolute():
                archive = self.storage.resolve(sub.archive_path)
            plan = _Plan(run.id, sub.id, run.attempt, sub.team_id, sub.image_id, archive, profile,
                         track.metric_profile or "default", track.testset, float(track.total_timeout_s),
                         float(track.case_timeout_s), max(0, int(track.fail_fast_cases or 0)))
            # the submission reflects this (latest) attempt from now on
            latest = s.execute(select(func.max(Run.attempt)).where(Run.submission_id == sub.id)).scalar_one()
            if latest == run.attempt and sub.state != SubmissionState.cancelled:
                sub.state, sub.reason = SubmissionState.loading, ""
                sub.dsc = sub.nsd = sub.runtime_s = None
                sub.summary, sub.finished_at = {}, None
                sub.metric_profile = plan.metric_profile
            run.metric_profile, run.testset = plan.metric_profile, plan.testset
            run.cpu_model = sb.cpu_model()[:200]
            run.cpuset = sb.format_cpuset(profile.pinned_cores())
            audit(s, action="run.loading", target=run, actor=self.actor, attempt=run.attempt, previous="queued")
        return plan

    def execute(self) -> RunState:
        plan = self.plan()
        interval = max(0.5, min(15.0, self.settings.heartbeat_timeout_s / 6))
        loaded_now, image = False, None
        try:
            with _Heartbeat(self.url, self.run_id, interval):
                try:
                    client = self.client()
                    with session_scope(self.url) as s:
                        s.get(Run, self.run_id).docker_version = _docker_version(client)[:100]
                    if not plan.archive.exists():
                        raise InfraError(f"the stored image archive {plan.archive.name} is missing from storage")
                    image, loaded_now = sb.load_image(client, plan.archive, expected_id=plan.image_id)
                    return self._run_cases(plan, client, image)
                except Cancelled:
                    self._set_state(RunState.cancelled, reason="the submission was cancelled")
                    return RunState.cancelled
                except (ParticipantError, sb.ImageLoadError) as exc:
                    self._set_state(RunState.failed, reason=str(exc))
                    return RunState.failed
                except (InfraError, sb.SandboxInfraError) as exc:
                    if isinstance(exc, sb.SandboxInfraError):
                        sb.forget_docker_client(self.settings)
                    return self._infra(str(exc))
                except OSError as exc:  # storage
                    return self._infra(f"storage error: {exc}")
                except Exception as exc:  # noqa: BLE001 - a bug or an unknown outage: retry, bounded
                    from api.storage import StorageError

                    if isinstance(exc, StorageError):
                        return self._infra(f"storage error: {exc}")
                    log.exception("run %s: unexpected error", self.run_id)
                    return self._infra(f"internal error: {exc.__class__.__name__}: {exc}")
        finally:
            if loaded_now and image is not None:
                try:
                    self.client().images.remove(image.id, force=False, noprune=False)
                except Exception:  # noqa: BLE001 - in use by another run, or already gone
                    pass

    def _infra(self, reason: str) -> RunState:
        with session_scope(self.url) as s:
            run = s.get(Run, self.run_id)
            new_id = retry_or_fail(s, run, reason=reason, settings=self.settings, actor=self.actor)
            queue = run.queue
            attempt = run.attempt + 1
        if new_id is not None:
            sender = self._sender if self._sender is not None else celery_sender(self.settings)
            try:
                sender(new_id, queue, backoff_s(self.settings, attempt))
            except Exception as exc:  # noqa: BLE001 - the reaper re-sends queued runs never picked up
                log.warning("could not enqueue run %s: %s", new_id, exc)
        return RunState.infra_failed

    def _run_cases(self, plan: _Plan, client: Any, image: Any) -> RunState:
        from evaluator import score_case
        from evaluator.io import load_ground_truth

        manifest, data_root = _load_testset(plan.testset, self.storage)
        limit = _reason_limit(self.settings)
        with session_scope(self.url) as s:
            run = s.get(Run, self.run_id)
            run.cases_total = len(manifest.cases)
            done = {cid: (st, why) for cid, st, why in s.execute(
                select(CaseResult.case_id, CaseResult.status, CaseResult.reason)
                .where(CaseResult.run_id == self.run_id))}
        self._set_state(RunState.running, cases_total=len(manifest.cases))
        run_user = self._run_user(plan, client, image)
        started = time.monotonic()
        recorded_params = False
        seen: list[tuple[CaseStatus, str]] = []  # (status, reason) of the cases so far, in test-set order
        stopped = ""
        try:
            for index, case in enumerate(manifest.cases):
                if case.id in done:
                    seen.append(done[case.id])
                else:
                    row = self._run_one(plan, client, case, data_root, run_user, started, limit,
                                        record_params=not recorded_params, score_case=score_case,
                                        load_ground_truth=load_ground_truth)
                    recorded_params = True
                    seen.append((row["status"], row.get("reason", "")))
                stopped = _fail_fast(plan, seen, remaining=len(manifest.cases) - index - 1)
                if stopped:
                    log.info("run %s: %s", self.run_id, stopped)
                    break
        finally:
            self._forget_run_dir()
        self._set_state(RunState.scoring)
        return self._finish(plan, stopped=stopped)

    def _run_user(self, plan: _Plan, client: Any, image: Any) -> tuple[str | None, str]:
        """The user every case container of this run gets (resolved once, numerically: see sandbox)."""
        labels = {sb.LABEL_WORKER: sb.worker_identity(), sb.LABEL_RUN: str(self.run_id),
                  sb.LABEL_DEPLOYMENT: sb.deployment_id(self.settings)}
        try:
            return sb.resolve_user(client, plan.image_id, image.attrs, allow_root=plan.profile.allow_root,
                                   labels=labels)
        except Exception as exc:  # noqa: BLE001
            if sb._is_engine_error(exc):
                raise sb.SandboxInfraError(f"Docker engine error while reading the image's user: {exc}") from exc
            raise

    def _run_one(self, plan: _Plan, client: Any, case: Any, data_root: Path, run_user: tuple[str | None, str],
                 started: float, limit: int, *, record_params: bool, score_case: Any,
                 load_ground_truth: Any) -> dict[str, Any]:
        """Run, score and record one case; its outputs/ is deleted once scored. Returns the recorded row."""
        if self._cancelled():
            raise Cancelled()
        input_file = Path(data_root) / case.input.path
        if not input_file.exists():
            raise InfraError(f"test set file {case.input.path} is missing")
        labels = [lab.value for lab in case.labels]
        row: dict[str, Any] = dict(run_id=self.run_id, case_id=case.id, modality=case.modality,
                                   size_class=case.size_class)
        if time.monotonic() - started > plan.total_timeout_s:
            row.update(status=CaseStatus.timeout, runtime_s=plan.case_timeout_s,
                       reason=f"total time limit of the run exceeded ({plan.total_timeout_s:g} s): case not run")
            self._record(row)
            return row
        case_dir = self.storage.case_dir(self.run_id, case.id)
        out_dir = case_dir / "outputs"
        try:
            if out_dir.exists():
                sb_shutil_rmtree(out_dir)
            cr = sb.run_case(client, image_id=plan.image_id, input_file=input_file, out_dir=out_dir,
                             profile=plan.profile, run_user=run_user,
                             labels={sb.LABEL_RUN: str(self.run_id), sb.LABEL_CASE: case.id,
                                     sb.LABEL_DEPLOYMENT: sb.deployment_id(self.settings)},
                             scratch_dir=self.storage.scratch_dir())
            if record_params:
                with session_scope(self.url) as s:
                    s.get(Run, self.run_id).container_params = cr.container_params
            segs = sb.check_output(cr, expected_shape=tuple(case.shape))
            row.update(cpu_s=cr.cpu_s, peak_memory_bytes=cr.peak_memory_bytes, exit_code=cr.exit_code,
                       stdout_tail=_truncate(cr.log_text("stdout")), stderr_tail=_truncate(cr.log_text("stderr")))
            if segs is not None:
                gts, spacing = load_ground_truth(Path(data_root) / case.gt.path)
                if spacing is None:
                    spacing = tuple(case.spacing)
                score = score_case(gts, segs, spacing=spacing, profile=plan.metric_profile, labels=labels,
                                   stored_spacing=getattr(spacing, "stored", None))
                row.update(status=CaseStatus.ok, runtime_s=cr.runtime_s, dsc=_num(score.dsc), nsd=_num(score.nsd),
                           per_class=_jsonable(score.to_dict()))
            else:
                row.update(status=CaseStatus(cr.status), runtime_s=plan.case_timeout_s, dsc=0.0, nsd=0.0,
                           reason=bound_text(f"case {case.id}: {cr.reason} (after {cr.runtime_s:.2f} s)", limit))
            self._record(row)
        finally:
            # nothing of the output is needed once scored (the scores, logs and measurements are recorded);
            # a hostile case's files (many, huge, sparse) leave storage with it
            if not getattr(self.settings, "keep_case_outputs", False):
                sb_shutil_rmtree(case_dir)
        return row

    def _forget_run_dir(self) -> None:
        """Remove the run's (by now empty) storage directory."""
        if getattr(self.settings, "keep_case_outputs", False):
            return
        try:
            (Path(self.storage.root) / "runs" / str(self.run_id)).rmdir()
        except OSError:
            pass  # never created, or kept outputs

    def _record(self, row: dict[str, Any]) -> None:
        """Persist one case result; a result already recorded for (run, case) is kept, not doubled."""
        try:
            with session_scope(self.url) as s:
                s.add(CaseResult(**row))
                s.execute(update(Run).where(Run.id == self.run_id).values(heartbeat_at=utcnow())
                          .execution_options(synchronize_session=False))
        except IntegrityError:
            log.info("run %s: case %s already recorded", self.run_id, row["case_id"])

    def _finish(self, plan: _Plan, *, stopped: str = "") -> RunState:
        limit = _reason_limit(self.settings)
        with session_scope(self.url) as s:
            cases = list(s.execute(select(CaseResult).where(CaseResult.run_id == self.run_id)).scalars())
            summary = summarize(cases)
            run = s.get(Run, self.run_id)
            # the run's totals: n (recorded) + not_run = cases_total; a run stopped early records no row for
            # the cases it did not run (they are not results: the run failed)
            summary["not_run"] = max(0, int(run.cases_total or 0) - len(cases))
            summary["stopped_early"] = bool(stopped)
            sub = s.get(Submission, plan.submission_id)
            latest = s.execute(select(func.max(Run.attempt)).where(Run.submission_id == sub.id)).scalar_one()
            failed = [c for c in cases if c.status != CaseStatus.ok]
            if stopped:
                state, reason = RunState.failed, stopped
            elif cases and len(failed) == len(cases):
                state = RunState.failed
                reason = f"every case failed; first: {failed[0].reason}"
            else:
                state = RunState.succeeded
                reason = f"{len(failed)} of {len(cases)} cases failed" if failed else ""
            if latest == plan.attempt and sub.state != SubmissionState.cancelled:
                sub.dsc, sub.nsd, sub.runtime_s = summary["dsc"], summary["nsd"], summary["runtime_s"]
                summary.update(run_id=self.run_id, attempt=plan.attempt, testset=plan.testset)
                sub.summary, sub.metric_profile = summary, plan.metric_profile
            run.log_tail = bound_text("\n".join(c.reason for c in failed), 4 * limit)
        self._set_state(state, reason=reason)
        _refresh_leaderboard()
        return state


def _fail_fast(plan: _Plan, seen: list[tuple[CaseStatus, str]], *, remaining: int) -> str:
    """The reason to stop the run now, or "" (see :func:`evaluator.runs.fail_fast_reason`)."""
    return fail_fast_reason(plan.fail_fast_cases, seen, remaining=remaining)


def sb_shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _num(v: Any) -> float:
    v = float(v)
    return 0.0 if math.isnan(v) else v


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if hasattr(obj, "item"):
        return _jsonable(obj.item())
    return obj


def _refresh_leaderboard() -> None:
    """Tell an in-process leaderboard cache that results changed (others see the DB fingerprint)."""
    try:
        from api.leaderboard import invalidate
    except Exception:  # noqa: BLE001 - no leaderboard in this build
        return
    try:
        invalidate()
    except Exception:  # noqa: BLE001
        log.warning("leaderboard invalidation failed", exc_info=True)


def execute_run(run_id: int, settings: Any, *, queue: str | None = None, task_id: str = "", client: Any = None,
                sender: Sender | None = None) -> int | None:
    """Claim the fairest queued run of ``run_id``'s queue and execute it; returns the run executed.

    Plain Python (the Celery task calls it; tests call it directly). Returns None when nothing
    eligible was queued (the run was already claimed, finished, cancelled or is backing off).
    """
    if queue is None:
        with session_scope(settings.database_url) as s:
            run = s.get(Run, run_id)
            queue = run.queue if run is not None else "cpu"
    claimed = claim_run(settings, queue=queue, worker=sb.worker_identity(), task_id=task_id)
    if claimed is None:
        log.info("message for run %s: no eligible queued run on %s", run_id, queue)
        return None
    log.info("message for run %s: executing run %s", run_id, claimed)
    _Execution(settings, claimed, client=client, sender=sender).execute()
    return claimed
