"""Interactive tracks on the trusted side: one worker round trip per iteration (docs/interactive.md, execution).

An execution host holds no ground truth, so each next click comes from here. Per case the worker runs the container
once per iteration (0 = the first prompt, 1..K = refinements) and posts each iteration's output to
``POST /api/worker/shards/{id}/cases/{case}/iterations/{i}``; :func:`record_iteration` then, in one request:

1. checks the lease, the case, the order (iteration i needs i-1 under the same lease; iteration 0 under a new lease
   starts the case again: a requeued shard) and answers a repeat from what it stored (idempotent retries);
2. validates the output (``evaluator.io.load_prediction``: npz safety, key, shape, dtype, size) in a scratch file;
3. scores it against the ground truth (the run's metric profile) and simulates the clicks the next iteration gets
   (``evaluator.interactive``: pure functions of one case's arrays, the ground truth cached for the case's
   iterations);
4. an iteration without a valid output (no file, crash, timeout, invalid, over the class budget) keeps the last
   valid prediction: its metrics and its clicks are those of that prediction (as the reference, whose previous file
   stays in ``outputs/``), zeros before any valid one;
5. records a :class:`api.models.CaseIteration` row and answers the next iteration's prompts (every click so far, in
   the reference's ``clicks`` / ``clicks_order`` layout) — a few hundred bytes of JSON.

The case ends with the usual case upload (``POST …/cases/{case}``, no output): :func:`fold_case` turns the rows
into the CaseResult (per-iteration DSC/NSD, DSC_AUC/NSD_AUC, final DSC/NSD, total runtime, budget marker), scored
at once, and deletes the rows. Nothing of the output is kept: the worker keeps the last valid prediction itself
(it is the next input's ``prev_pred``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.db import session_scope
from api.errors import ApiError
from api.models import CaseIteration, CaseResult, CaseStatus, Run, Submission, Track, TrackKind
from api.storage import Storage
from evaluator.io import bound_text

from . import shards
from .identity import WorkerIdentity
from .scoring import jsonable
from .testsets import load_testset

__all__ = ["record_iteration", "fold_case", "is_interactive", "interactive_spec", "case_prompt_spec",
           "cumulative_clicks", "budget_s"]

log = logging.getLogger(__name__)

_GT_CACHE: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
_GT_LOCK = threading.Lock()
_GT_CACHE_ENTRIES = 8


def is_interactive(track: Track) -> bool:
    return track.kind == TrackKind.interactive


def budget_s(track: Track, classes: int) -> float:
    """A case's time budget over all its iterations: ``class_budget_s`` per class (at least one class)."""
    from evaluator.interactive import case_budget_s

    return float(case_budget_s(max(1, int(classes)), float(track.class_budget_s)))


def interactive_spec(track: Track) -> dict[str, Any] | None:
    """The shard spec's ``interactive`` part (None for a single-run track)."""
    if not is_interactive(track):
        return None
    return {"iterations": int(track.iterations), "class_budget_s": float(track.class_budget_s)}


def case_prompt_spec(track: Track, case: Any) -> dict[str, Any]:
    """Per case of a shard spec: the class count (interactive budget) and, for point prompts, the manifest's points."""
    out: dict[str, Any] = {}
    if is_interactive(track):
        out["classes"] = len(getattr(case, "labels", None) or []) or 1
        out["shape"] = [int(n) for n in case.shape]
    points = _initial_points(track, case)
    if points is not None:
        out["points"] = points
    return out


# --------------------------------------------------------------------------------------------- clicks


def _initial_points(track: Track, case: Any) -> list[Any] | None:
    if track.prompt not in ("point", "box+point"):
        return None
    from evaluator.interactive import manifest_points

    return jsonable(manifest_points(case))


def cumulative_clicks(rows: list[CaseIteration], initial: list[Any] | None = None) -> dict[str, Any]:
    """Every click so far in the reference's layout (``labels``, ``clicks``, ``clicks_order``), from the clicks each
    row's prediction produced (in order), after the manifest's points for point prompts."""
    from evaluator.interactive import accumulate_clicks

    return jsonable(accumulate_clicks([r.clicks for r in sorted(rows, key=lambda r: r.iteration)],
                                       initial=initial))


def _ground_truth(path: Path) -> tuple[Any, Any]:
    """The case's ground truth and stored spacing, a few cases kept in memory (the K+1 iterations of a case)."""
    from evaluator.io import load_ground_truth

    key = str(path)
    with _GT_LOCK:
        hit = _GT_CACHE.get(key)
        if hit is not None:
            _GT_CACHE.move_to_end(key)
            return hit
    value = load_ground_truth(path)
    with _GT_LOCK:
        _GT_CACHE[key] = value
        while len(_GT_CACHE) > _GT_CACHE_ENTRIES:
            _GT_CACHE.popitem(last=False)
    return value


def _num(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _evaluate(case: Any, root: Path, profile: str, segs: Any) -> tuple[float | None, float | None, dict[str, Any],
                                                                      list[Any]]:
    """DSC, NSD, per-class scores of ``segs`` (None: zeros) and the clicks it produces (H14-eval's functions)."""
    import numpy as np

    from evaluator.interactive import next_clicks, score_iteration

    gts, spacing = _ground_truth(Path(root) / case.gt.path)
    if spacing is None:
        spacing = tuple(case.spacing)
    if segs is None:
        segs = np.zeros(gts.shape, dtype=np.uint8)
    labels = [lab.value for lab in case.labels]
    score = score_iteration(gts, segs, spacing=spacing, profile=profile, labels=labels)
    clicks = next_clicks(gts, segs, spacing=spacing, labels=labels, profile=profile)
    return _num(score.dsc), _num(score.nsd), jsonable(score.to_dict()), jsonable(clicks)


# --------------------------------------------------------------------------------------------- iterations


def _context(s: Session, ident: WorkerIdentity, shard_id: int, case_id: str, lease: str
             ) -> tuple[Any, Run, Track] | None:
    shard = shards.held_shard(s, ident, shard_id, lease)
    if shards.shard_cancelled(s, shard):
        return None
    if case_id not in (shard.case_ids or []):
        raise ApiError(404, "not_found", f"case {case_id!r} is not in shard {shard_id}")
    run = s.get(Run, shard.run_id)
    sub = s.get(Submission, run.submission_id) if run is not None else None
    track = s.get(Track, sub.track_id) if sub is not None else None
    if run is None or track is None:
        raise ApiError(404, "not_found", f"shard {shard_id} belongs to no run")
    if not is_interactive(track):
        raise ApiError(409, "not_interactive", f"track {track.slug!r} is not interactive: upload the case once "
                       f"(POST /api/worker/shards/{shard_id}/cases/{case_id})")
    return shard, run, track


def _answer(track: Track, rows: list[CaseIteration], row: CaseIteration, *, initial: list[Any] | None,
            cancel: bool = False, duplicate: bool = False) -> dict[str, Any]:
    k = int(track.iterations)
    done = row.iteration >= k or bool(row.budget_exceeded)
    out: dict[str, Any] = {"cancel": cancel, "duplicate": duplicate, "iteration": row.iteration, "valid": row.valid,
                           "status": row.status, "reason": row.reason, "budget_exceeded": bool(row.budget_exceeded),
                           "done": done, "next": None}
    if not done:
        out["next"] = {"iteration": row.iteration + 1,
                       **cumulative_clicks([r for r in rows if r.iteration <= row.iteration], initial)}
    return out


def record_iteration(settings: Any, ident: WorkerIdentity, shard_id: int, case_id: str, iteration: int,
                     meta: dict[str, Any], output: Path | None) -> dict[str, Any]:
    """Record iteration ``iteration`` of an interactive case (see the module docstring); the answer carries the next
    iteration's prompts. ``output`` is a host-local scratch file (the caller deletes it)."""
    lease = str(meta["lease"])
    limit = int(getattr(settings, "reason_max_chars", 2000))
    storage = Storage.from_settings(settings)
    with session_scope(settings.database_url) as s:
        ctx = _context(s, ident, shard_id, case_id, lease)
        if ctx is None:
            return {"cancel": True, "duplicate": False, "iteration": iteration, "done": True, "next": None}
        _shard, run, track = ctx
        run_id = run.id
        if iteration > int(track.iterations):
            raise ApiError(422, "invalid_request", f"iteration {iteration}: track {track.slug!r} has iterations "
                           f"0..{int(track.iterations)}")
        if s.scalar(select(CaseResult.id).where(CaseResult.run_id == run_id, CaseResult.case_id == case_id)):
            raise ApiError(409, "case_recorded", f"case {case_id!r} is recorded for run {run_id} already: "
                           "nothing more is accepted for it")
        rows = list(s.scalars(select(CaseIteration).where(CaseIteration.run_id == run_id,
                                                          CaseIteration.case_id == case_id)
                              .order_by(CaseIteration.iteration)))
        mine = [r for r in rows if r.lease == lease]
        same = next((r for r in mine if r.iteration == iteration), None)
        testset = run.testset or track.testset
        profile = run.metric_profile or track.metric_profile or "default"
        _m, root, index = load_testset(testset, storage)
        case = index[case_id]
        initial = _initial_points(track, case)
        if same is not None:  # a retried request: the stored answer
            return _answer(track, mine, same, initial=initial, duplicate=True)
        if iteration == 0:
            if rows:  # a requeued shard starts the case again: the old holder's iterations go
                s.execute(delete(CaseIteration).where(CaseIteration.run_id == run_id,
                                                      CaseIteration.case_id == case_id))
                s.commit()
                rows, mine = [], []
        elif not any(r.iteration == iteration - 1 for r in mine):
            raise ApiError(409, "iteration_out_of_order", f"case {case_id!r}: iteration {iteration} needs iteration "
                           f"{iteration - 1} first (under this lease); start the case at iteration 0")
        prev = mine[-1] if mine else None
        if prev is not None and prev.budget_exceeded:
            raise ApiError(409, "case_done", f"case {case_id!r} stopped at iteration {prev.iteration} (time budget); "
                           "finish it with the case upload")
        classes = len(case.labels or []) or 1
        budget = budget_s(track, classes)
        spent = sum(float(r.runtime_s or 0) for r in mine)
    runtime = float(meta.get("runtime_s") or 0.0)
    over = bool(meta.get("budget_exceeded")) or spent + runtime > budget
    status, reason, segs, sha = _judge(meta, output, case, over=over, kept=_last_valid(mine), iteration=iteration,
                                       profile=profile,
                                       budget=f"{budget:g} s = {classes} class(es) x {float(track.class_budget_s):g} s",
                                       used=spent + runtime)
    valid = segs is not None
    if valid:
        dsc, nsd, per_class, clicks = _evaluate(case, root, profile, segs)
    elif prev is not None:  # the last valid prediction stays in effect (zeros before any): same scores, same clicks
        dsc, nsd, per_class, clicks, sha = prev.dsc, prev.nsd, dict(prev.per_class or {}), list(prev.clicks or []), \
            prev.prediction_sha256
    else:
        dsc, nsd, per_class, clicks = _evaluate(case, root, profile, None)
    row = CaseIteration(run_id=run_id, case_id=case_id, iteration=iteration, lease=lease, status=status, valid=valid,
                        reason=bound_text(reason, limit), runtime_s=runtime, dsc=dsc, nsd=nsd, per_class=per_class,
                        clicks=clicks, prediction_sha256=sha, budget_exceeded=over)
    with session_scope(settings.database_url) as s:
        ctx = _context(s, ident, shard_id, case_id, lease)  # the lease may have moved meanwhile
        if ctx is None:
            return {"cancel": True, "duplicate": False, "iteration": iteration, "done": True, "next": None}
        shard, _run, track = ctx
        s.add(row)
        try:
            s.flush()
        except IntegrityError:  # a concurrent retry of the same iteration won: answer it
            s.rollback()
            mine = list(s.scalars(select(CaseIteration).where(CaseIteration.run_id == run_id,
                                                              CaseIteration.case_id == case_id,
                                                              CaseIteration.lease == lease)
                                  .order_by(CaseIteration.iteration)))
            same = next((r for r in mine if r.iteration == iteration), None)
            if same is None:
                raise
            return _answer(track, mine, same, initial=initial, duplicate=True)
        shard.heartbeat_at = row.created_at
        s.commit()
        mine = list(s.scalars(select(CaseIteration).where(CaseIteration.run_id == run_id,
                                                          CaseIteration.case_id == case_id,
                                                          CaseIteration.lease == lease)
                              .order_by(CaseIteration.iteration)))
        return _answer(track, mine, next(r for r in mine if r.iteration == iteration), initial=initial)


def _judge(meta: dict[str, Any], output: Path | None, case: Any, *, over: bool, kept: int | None, iteration: int,
           budget: str, used: float, profile: str = "default") -> tuple[str, str, Any, str]:
    """(status, reason, segs or None, sha256) of one iteration's output: over the budget, missing or invalid
    outputs are not used (the reason says which prediction the case keeps). Validated under the run's ``profile``
    (cvpr24/cvpr25 accept float and negative ``segs``, as the references scored them)."""
    status = str(meta.get("status") or "crash")
    reason = str(meta.get("reason") or "")
    keeps = f"iteration {kept}" if kept is not None else "no iteration (zeros)"
    if over:
        return "timeout", (f"the case's time budget ({budget}) was used up at iteration {iteration} ({used:.1f} s): "
                           f"the case keeps the prediction of {keeps}"), None, ""
    if status == "ok" and output is None:
        status, reason = "no_output", reason or "the container exited 0 but wrote no output file"
    elif status == "ok" and output is not None:
        from evaluator.io import CaseFormatError, load_prediction

        try:
            return ("ok", "", load_prediction(output, expected_shape=tuple(case.shape), profile=profile),
                    _sha256(output))
        except CaseFormatError as exc:
            status, reason = "invalid_output", f"invalid prediction: {exc}"
    return status, f"{reason or status}; the case keeps the prediction of {keeps}", None, ""


def _last_valid(rows: list[CaseIteration]) -> int | None:
    valid = [r.iteration for r in rows if r.valid]
    return valid[-1] if valid else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------- the case


def fold_case(s: Session, *, row: CaseResult, run: Run, track: Track, lease: str, limit: int) -> CaseResult:
    """Fill the CaseResult of an interactive case from its iteration rows (this lease's), then delete them.

    Iterations not run (the budget stopped the case) count with the last valid prediction's scores; the AUCs are the
    profile's (``evaluator.interactive.auc``: the reference's cumulative trapezoid); the final DSC/NSD are those of
    the last iteration; the runtime is the total over iterations. A case without any valid prediction keeps the
    status of its first iteration (DSC = NSD = 0)."""
    from evaluator.interactive import auc

    rows = list(s.scalars(select(CaseIteration).where(CaseIteration.run_id == run.id,
                                                      CaseIteration.case_id == row.case_id,
                                                      CaseIteration.lease == lease)
                          .order_by(CaseIteration.iteration)))
    k = int(track.iterations)
    profile = run.metric_profile or track.metric_profile or "default"
    entries: list[dict[str, Any]] = []
    for r in rows:
        entries.append({"iteration": r.iteration, "status": r.status, "valid": bool(r.valid),
                        "dsc": r.dsc, "nsd": r.nsd, "runtime_s": round(float(r.runtime_s or 0), 6),
                        "budget_exceeded": bool(r.budget_exceeded), "clicks": r.clicks, "reason": r.reason})
    if rows and len(rows) < k + 1:
        last = rows[-1]
        for i in range(len(rows), k + 1):
            entries.append({"iteration": i, "status": "not_run", "valid": False, "dsc": last.dsc, "nsd": last.nsd,
                            "runtime_s": 0.0, "budget_exceeded": bool(last.budget_exceeded), "clicks": [],
                            "reason": "not run: the case stopped (time budget); the last valid prediction counts"})
    row.iterations = entries
    row.budget_exceeded = any(r.budget_exceeded for r in rows)
    row.runtime_s = float(sum(float(r.runtime_s or 0) for r in rows))
    row.scored, row.output_key = True, ""
    if not rows or not any(r.valid for r in rows):
        first = rows[0] if rows else None
        status = CaseStatus(first.status) if first is not None and first.status in CaseStatus._value2member_map_ \
            else row.status if row.status != CaseStatus.ok else CaseStatus.no_output
        row.status = status
        row.dsc = row.nsd = 0.0
        row.dsc_auc = row.nsd_auc = 0.0 if rows else None
        row.reason = bound_text(f"case {row.case_id}: no iteration produced a valid prediction"
                                + (f" (iteration 0: {first.reason})" if first is not None else
                                   f": {row.reason or 'nothing was run'}"), limit)
        if not rows:
            row.runtime_s = float(track.case_timeout_s)
        row.per_class = {"iterations": len(rows)}
    else:
        dscs = [float(e["dsc"] or 0.0) for e in entries]
        nsds = [float(e["nsd"] or 0.0) for e in entries]
        row.status = CaseStatus.ok
        row.dsc, row.nsd = dscs[-1], nsds[-1]
        row.dsc_auc, row.nsd_auc = _num(auc(dscs, profile=profile)), _num(auc(nsds, profile=profile))
        row.per_class = dict(rows[-1].per_class or {})
        notes = [f"iteration {r.iteration}: {r.reason}" for r in rows if not r.valid]
        if row.budget_exceeded:
            notes.insert(0, "over the time budget")
        row.reason = bound_text(f"case {row.case_id}: " + "; ".join(notes), limit) if notes else ""
    s.execute(delete(CaseIteration).where(CaseIteration.run_id == run.id, CaseIteration.case_id == row.case_id))
    return row
