"""Trusted scoring and finishing (the ``score`` queue, next to the database and the ground truth).

- :func:`record_case`: a worker's case upload becomes a CaseResult (unique per (run, case)); an ``ok`` case with
  an output waits unscored for :func:`score_case`; any other status is final at once (DSC = NSD = 0, runtime =
  the case time limit, as the single-host runner records it).
- :func:`score_case`: validate the stored output (``evaluator.io.load_prediction``: npz safety, key, shape,
  dtype, size) after copying the object to a host-local scratch file (``get_to_file``: local or S3 storage alike),
  score it with ``evaluator.score_case`` and the run's metric profile against the ground truth, delete the output
  object (unless ``SEGARENA_KEEP_CASE_OUTPUTS``), then fail-fast and finishing.
- :func:`maybe_finish_run`: when every shard is done/cancelled and every case scored, the run's totals
  (``evaluator.runs.summarize``) and final state; conditional on the run's state, so it happens once.
"""

from __future__ import annotations

import logging
import math
import secrets
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.db import affected_rows, session_scope
from api.lifecycle import ACTIVE_RUN_STATES, transition
from api.models import (
    CaseResult, CaseStatus, Run, RunState, Shard, ShardState, Submission, SubmissionState, Track, TrackKind, utcnow,
)
from api.storage import BadKey, ObjectNotFound, Storage
from data_manifests.schema import SIZE_CLASSES
from evaluator.failures import run_time_limit
from evaluator.io import bound_text
from evaluator.runs import fail_fast_reason, summarize

from .shards import ACTOR
from .testsets import load_testset

__all__ = ["record_case", "score_case", "maybe_finish_run", "stop_run", "check_fail_fast", "in_fail_fast_window",
           "after_case", "LOG_TAIL_CHARS"]

log = logging.getLogger(__name__)

LOG_TAIL_CHARS = 64 * 1024  # each of stdout_tail / stderr_tail as stored


def _limit(settings: Any) -> int:
    return int(getattr(settings, "reason_max_chars", 2000))


def _num(v: Any) -> float:
    v = float(v)
    return 0.0 if math.isnan(v) else v


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON for a JSON column: string keys, lists for tuples, NumPy scalars as Python numbers,
    NaN and infinities as null (the scorer's per-class tables, the interactive clicks)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if hasattr(obj, "item"):
        return jsonable(obj.item())
    return obj


def _case_reason(case_id: str, reason: str, runtime_s: float | None, limit: int) -> str:
    return bound_text(f"case {case_id}: {reason} (after {float(runtime_s or 0):.2f} s)", limit)


# --------------------------------------------------------------------------------------------- recording


def record_case(settings: Any, *, shard: Shard, case: Any, meta: dict[str, Any], output_key: str,
                worker_name: str, session: Session) -> CaseResult | None:
    """Add the CaseResult of an uploaded case (the caller commits); None when (run, case) is already recorded."""
    limit = _limit(settings)
    run = session.get_one(Run, shard.run_id)
    track = session.get_one(Track, session.get_one(Submission, run.submission_id).track_id)
    status = CaseStatus(meta["status"])
    reason = str(meta.get("reason") or "")
    runtime = float(meta.get("runtime_s") or 0.0)
    interactive = track.kind == TrackKind.interactive
    if status == CaseStatus.ok and not output_key and not interactive:
        status, reason = CaseStatus.no_output, reason or "the container exited 0 but wrote no output file"
    row = CaseResult(
        run_id=run.id, case_id=case.id, modality=case.modality, size_class=case.size_class, status=status,
        cpu_s=meta.get("cpu_s"), peak_memory_bytes=meta.get("peak_memory_bytes"), exit_code=meta.get("exit_code"),
        stdout_tail=bound_text(meta.get("stdout_tail") or "", LOG_TAIL_CHARS),
        stderr_tail=bound_text(meta.get("stderr_tail") or "", LOG_TAIL_CHARS),
        worker_name=worker_name[:200], shard_id=shard.id, wall_s=meta.get("wall_s"), created_at=utcnow(),
    )
    if interactive:  # the iterations were scored one by one (api/execution/interactive.py): fold them
        from .interactive import fold_case

        row.reason = reason
        fold_case(session, row=row, run=run, track=track, lease=shard.lease, limit=limit)
    elif status == CaseStatus.ok:
        row.runtime_s, row.output_key, row.scored = runtime, output_key, False
    else:
        row.runtime_s, row.dsc, row.nsd, row.scored = run_time_limit(run.case_timeout_s, track.case_timeout_s), 0.0, 0.0, True
        row.reason = _case_reason(case.id, reason or status.value, runtime, limit)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        return None
    if not run.container_params and isinstance(meta.get("container_params"), dict):
        run.container_params = meta["container_params"]
    return row


# --------------------------------------------------------------------------------------------- scoring


def score_case(settings: Any, case_result_id: int) -> str | None:
    """Score one uploaded output (idempotent: a scored row is left alone). Returns the recorded status."""
    storage = Storage.from_settings(settings)
    limit = _limit(settings)
    keep = bool(getattr(settings, "keep_case_outputs", False))
    with session_scope(settings.database_url) as s:
        row = s.get(CaseResult, case_result_id)
        if row is None or row.scored:
            return None
        run = s.get_one(Run, row.run_id)
        sub = s.get_one(Submission, run.submission_id)
        key, case_id, runtime, run_id = row.output_key, row.case_id, row.runtime_s, run.id
        if run.state == RunState.cancelled or sub.state == SubmissionState.cancelled:
            cancelled = True  # nothing more is scored for it; its output goes
        else:
            cancelled = False
            track = s.get_one(Track, sub.track_id)
            testset = run.testset or track.testset
            profile = run.metric_profile or track.metric_profile or "default"
            timeout_s = run_time_limit(run.case_timeout_s, track.case_timeout_s)
            fail_fast_k = int(track.fail_fast_cases or 0)
    if cancelled:
        if key and not keep:
            _delete_output(storage, key)
        return None
    manifest, root, index = load_testset(testset, storage)
    case = index.get(case_id)
    scratch, copied = _output_file(storage, key, case_result_id) if case is not None and key else (None, False)
    try:
        values = _evaluate(case, case_id, scratch, root=Path(root), profile=profile, runtime=runtime, limit=limit)
    finally:
        if copied and scratch is not None:
            scratch.unlink(missing_ok=True)
    if values["status"] != CaseStatus.ok:
        values.update(dsc=0.0, nsd=0.0, runtime_s=timeout_s)
    with session_scope(settings.database_url) as s:
        won = affected_rows(s.execute(update(CaseResult).where(CaseResult.id == case_result_id, CaseResult.scored.is_(False))
                        .values(scored=True, **values).execution_options(synchronize_session=False)))
    if key and not keep:
        _delete_output(storage, key)
    if won:
        after_case(settings, run_id, fail_fast=in_fail_fast_window(manifest, fail_fast_k, case_id))
    return values["status"].value


def _output_file(storage: Any, key: str, case_result_id: int) -> tuple[Path | None, bool]:
    """(the uploaded output as a host-local file or None when it is gone, whether it is a scratch copy to delete).
    Locally the object is read in place; from object storage it is fetched to a scratch file. StorageError (storage
    down) propagates: the row stays unscored and the reaper re-sends it."""
    try:
        if storage.local:  # the object is a file of this host already: read in place, no copy
            path = storage.path_of(key)
            return (path if path.is_file() else None), False
        scratch = storage.staging.scratch_dir() / f"score-{case_result_id}-{secrets.token_hex(6)}.npz"
        storage.get_to_file(key, scratch)
        return scratch, True
    except (ObjectNotFound, BadKey):
        return None, False


def _evaluate(case: Any, case_id: str, output: Path | None, *, root: Path, profile: str, runtime: float | None,
              limit: int) -> dict[str, Any]:
    """The case result's values: the output validated (npz safety, key, shape, dtype, size), then scored with
    ``evaluator`` and the profile against the ground truth."""
    from evaluator import score_case as evaluate
    from evaluator.io import CaseFormatError, load_ground_truth, load_prediction

    if case is None:
        return dict(status=CaseStatus.invalid_output, reason=bound_text(f"case {case_id}: not in the test set", limit))
    if output is None:
        return dict(status=CaseStatus.no_output,
                    reason=_case_reason(case_id, "the uploaded output is missing from storage", runtime, limit))
    try:
        segs = load_prediction(output, expected_shape=tuple(case.shape), profile=profile)
    except CaseFormatError as exc:
        return dict(status=CaseStatus.invalid_output,
                    reason=_case_reason(case_id, f"invalid prediction: {exc}", runtime, limit))
    gts, spacing = load_ground_truth(root / case.gt.path)
    if spacing is None:
        spacing = tuple(case.spacing)
    score = evaluate(gts, segs, spacing=spacing, profile=profile, labels=[lab.value for lab in case.labels],
                     stored_spacing=getattr(spacing, "stored", None))
    undefined = bool(getattr(score, "undefined", False))  # stored NULL: left out of means and ranks, shown undefined
    return dict(status=CaseStatus.ok, dsc=None if undefined else _num(score.dsc),
                nsd=None if undefined and math.isnan(float(score.nsd)) else _num(score.nsd),
                per_class=jsonable(score.to_dict()), **_undefined_reason(score, case_id, profile, limit))


def _undefined_reason(score: Any, case_id: str, profile: str, limit: int) -> dict[str, Any]:
    """``{"reason": …}`` for a case whose DSC is undefined (NaN: cvpr24's label absent from both masks), else ``{}``.
    ``per_class["undefined"]`` marks it; the DSC column holds NULL for it (docs/interactive.md, "Undefined cases")."""
    if not getattr(score, "undefined", False):
        return {}
    notes = "; ".join(n for n in score.notes if "undefined" in n)
    return {"reason": bound_text(f"case {case_id}: DSC undefined under {profile} ({notes})", limit)}


def _delete_output(storage: Any, key: str) -> None:
    """Delete a scored (or no longer needed) output object; locally also its now empty runs/<run>/<case>/ folders."""
    try:
        storage.delete(key)
    except BadKey:
        return
    except Exception as exc:
        log.warning("could not delete the case output %s: %s", key, exc)
        return
    if storage.local:
        folder = storage.path_of(key).parent
        for d in (folder, folder.parent):
            try:
                d.rmdir()
            except OSError:
                break


def after_case(settings: Any, run_id: int, *, fail_fast: bool = True) -> None:
    """After a case was recorded as final: fail-fast (when ``fail_fast``: the case is one of the run's first
    ``fail_fast_cases``, :func:`in_fail_fast_window`), then finish the run if it is complete."""
    if not (fail_fast and check_fail_fast(settings, run_id)):
        maybe_finish_run(settings, run_id)


def in_fail_fast_window(manifest: Any, k: int, case_id: str) -> bool:
    """Whether ``case_id`` is one of the first ``k`` cases (test-set order) the fail-fast rule looks at. Only such a
    case's result can make the rule fire (the rest only lowers the cases that remain), so only then is it checked."""
    return k > 0 and any(c.id == case_id for c in manifest.cases[:k])


# --------------------------------------------------------------------------------------------- fail-fast


def check_fail_fast(settings: Any, run_id: int) -> str:
    """Stop the run when its first ``Track.fail_fast_cases`` cases (test-set order) all failed by the participant's
    fault and cases remain unrecorded; returns the reason ("" when the rule does not fire)."""
    with session_scope(settings.database_url) as s:
        run = s.get(Run, run_id)
        if run is None or run.state not in ACTIVE_RUN_STATES:
            return ""
        track = s.get_one(Track, s.get_one(Submission, run.submission_id).track_id)
        k = max(0, int(track.fail_fast_cases or 0))
        if k <= 0:
            return ""
        manifest, _root, _ = load_testset(run.testset or track.testset, Storage.from_settings(settings))
        first = [c.id for c in manifest.cases[:k]]
        rows = {r.case_id: r for r in s.scalars(select(CaseResult).where(CaseResult.run_id == run_id,
                                                                        CaseResult.case_id.in_(first)))}
        if len(rows) < len(first) or any(not r.scored for r in rows.values()):
            return ""
        recorded = s.scalar(select(func.count()).select_from(CaseResult).where(CaseResult.run_id == run_id)) or 0
        total = int(run.cases_total or len(manifest.cases))
        reason = fail_fast_reason(k, [(rows[c].status, rows[c].reason) for c in first], remaining=total - recorded)
        if not reason:
            return ""
        if stop_run(s, settings, run_id, stopped=reason):
            s.commit()
            _refresh_board()
        return reason


# --------------------------------------------------------------------------------------------- finishing


def maybe_finish_run(settings: Any, run_id: int) -> bool:
    """Finish the run if every shard is done or cancelled and every case scored (once: the state flip is conditional)."""
    with session_scope(settings.database_url) as s:
        run = s.get(Run, run_id)
        if run is None or run.state not in ACTIVE_RUN_STATES:
            return False
        states = s.scalars(select(Shard.state).where(Shard.run_id == run_id)).all()
        if not states or any(st in (ShardState.queued, ShardState.running) for st in states):
            return False
        unscored = s.scalar(select(func.count()).select_from(CaseResult)
                            .where(CaseResult.run_id == run_id, CaseResult.scored.is_(False))) or 0
        if unscored:
            return False
        done = stop_run(s, settings, run_id)
        if done:
            s.commit()
            _refresh_board()
        return done


def stop_run(s: Session, settings: Any, run_id: int, *, stopped: str = "", infra: str = "") -> bool:
    """Give the run its final state, totals and reason, mirror the submission, cancel its open shards; the caller
    commits. Conditional on the run being active: of two concurrent callers, one does it (returns True)."""
    limit = _limit(settings)
    run = s.get_one(Run, run_id)
    sub = s.get_one(Submission, run.submission_id)
    cases = list(s.scalars(select(CaseResult).where(CaseResult.run_id == run_id, CaseResult.scored.is_(True))
                           .order_by(CaseResult.id)))
    time_limit_s = run_time_limit(run.case_timeout_s, s.get_one(Track, sub.track_id).case_timeout_s)
    aggregates = summarize(cases, time_limit_s=time_limit_s, size_classes=SIZE_CLASSES)
    aggregates["not_run"] = max(0, int(run.cases_total or 0) - len(cases))
    aggregates["stopped_early"] = bool(stopped)
    failed = [c for c in cases if c.status != CaseStatus.ok]
    if sub.state == SubmissionState.cancelled:
        state, reason = RunState.cancelled, sub.reason or "the submission was cancelled"
    elif infra:
        state, reason = RunState.failed, infra
    elif stopped:
        state, reason = RunState.failed, stopped
    elif cases and len(failed) == len(cases):
        state, reason = RunState.failed, f"every case failed; first: {failed[0].reason}"
    elif not cases:
        state, reason = RunState.failed, "no case was run"
    else:
        state = RunState.succeeded
        reason = f"{len(failed)} of {len(cases)} cases failed" if failed else ""
    reason = bound_text(reason, limit)
    now = utcnow()
    aggregates.update(run_id=run_id, attempt=run.attempt, testset=run.testset)
    totals = dict(dsc=aggregates["dsc"], nsd=aggregates["nsd"], runtime_s=aggregates["runtime_s"],
                  aggregates=aggregates, metric_profile=run.metric_profile or sub.metric_profile)
    if not transition(s, run, state, reason=reason, now=now, only_from=ACTIVE_RUN_STATES, actor_label=ACTOR,
                      run_fields=dict(log_tail=bound_text("\n".join(c.reason for c in failed), 4 * limit)),
                      totals=totals, cases=len(cases), failed=len(failed), infra=bool(infra),
                      stopped_early=bool(stopped)):
        return False  # another scorer (or the reaper) finished it first
    from api.accounting.service import record_budget_warnings

    record_budget_warnings(s, run, settings=settings)  # budget.warning events at 70/90/100 % (api/accounting)
    # open shards stop: queued ones at once, running ones at their holder's next heartbeat (cancel: true)
    s.execute(update(Shard).where(Shard.run_id == run_id, Shard.state.in_((ShardState.queued, ShardState.running)))
              .values(state=ShardState.cancelled, finished_at=now, reason=bound_text(f"the run ended: {reason}", limit))
              .execution_options(synchronize_session=False))
    return True


def _refresh_board() -> None:
    try:
        from api.leaderboard import invalidate

        invalidate()
    except Exception:
        log.warning("leaderboard invalidation failed", exc_info=True)
