"""What a team learns about its own runs on the hidden test set: the track's feedback policy, in one place.

Every view of a submission a participant can reach (API detail, list, results, logs, the submission
page, and so the CLI) goes through :func:`redact`; who may see a submission at all is decided before,
elsewhere (the visibility check); this module decides only *what* the viewer sees of it.

Levels (``Track.feedback``; organizers always get ``full``):

* ``full`` (validation phases): everything — per-case scores, stdout/stderr tails, the run log.
* ``summary`` (the default): overall and per-modality scores; per case only its status and the cap
  that stopped it (time limit, memory limit, exit code), written by the platform. No log content, no
  per-case scores (DSC, NSD, runtime, per class), no ground-truth size class, and no failure reason that
  quotes what the container wrote (output file names, a prediction's array names…).
* ``none``: the state only (queued … succeeded / failed / cancelled), no scores and nothing per case,
  until the board is published; then ``summary``.

"Published" (:func:`board_published`): the track's visibility is ``public`` and no freeze cutoff applies —
the moment the leaderboard shows every submission's scores to everyone anyway. A ``hidden`` track, a
``frozen`` one, or a ``public`` one with a ``frozen_at`` time is not published.

Participants debug with ``segarena check`` on the public sample cases: it runs locally and shows all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterable

from api.models import CaseStatus, Feedback, Member, Role, Track, Visibility
from api.submissions import schemas

__all__ = ["level", "board_published", "redact", "case_cap", "FailedCase", "note_for", "per_case_public", "DEBUG_HINT"]

DEBUG_HINT = "debug with `segarena check` on the public sample cases"
# the aggregate keys a summary shows (anything else a run summary may grow stays organizer-only)
SUMMARY_AGGREGATES = frozenset({"n", "dsc", "nsd", "runtime_s", "status_counts", "ok", "failed", "total_runtime_s",
                                "by_modality", "by_size_class", "attempt"})
# the worker quotes a case's reason as "case <id>: <reason>"; what follows may come from the container
_CASE_QUOTE = re.compile(r"\bcase (?P<id>[^\s:]+): ")
_CASE_PREFIX = re.compile(r"^case \S+: ")
_AFTER = re.compile(r" \(after [0-9.]+ s\)$")
# the run reasons that quote case reasons (evaluator/runs.py, written by the trusted scorer)
_EVERY = re.compile(r"^every case failed; first: case (?P<id>[^\s:]+): ")
_STOPPED = re.compile(r"^stopped after the first (?P<k>\d+) cases failed: ")
_NOT_RUN = re.compile(r"\(\d+ remaining cases were not run\)$")


@dataclass(frozen=True)
class FailedCase:
    """What the policy needs of a failed case of the latest attempt (its raw reason is never shown as is)."""

    case_id: str
    status: CaseStatus
    exit_code: int | None
    reason: str


def board_published(track: Track) -> bool:
    """True when the track's leaderboard is public and live (visibility public, no freeze cutoff)."""
    from api.leaderboard import freeze_cutoff

    return track.visibility == Visibility.public and freeze_cutoff(track) is None


def level(track: Track, viewer: Member | None) -> Feedback:
    """The feedback level ``viewer`` gets on ``track``: organizers full; others the track's policy."""
    if viewer is not None and viewer.role == Role.organizer:
        return Feedback.full
    try:
        policy = Feedback(getattr(track.feedback, "value", track.feedback) or Feedback.summary.value)
    except ValueError:
        policy = Feedback.none  # an unknown value shares the least
    if policy == Feedback.none and board_published(track):
        return Feedback.summary
    return policy


def per_case_public(*tracks: Track) -> bool:
    """Whether per-case scores of runs on ``tracks`` may be shown to anyone who is not an organizer (the
    reproducibility board's case-by-case comparison): only when every one of them is at ``full``."""
    return all(level(t, None) == Feedback.full for t in tracks)


def note_for(lvl: Feedback, what: str) -> str:
    """One line saying what this view leaves out on a track at ``lvl`` ("" at full)."""
    if lvl == Feedback.full:
        return ""
    if lvl == Feedback.summary:
        return f"{what} are not shown on this track (feedback: summary); {DEBUG_HINT}"
    return (f"{what} are not shown on this track until its leaderboard is published (feedback: none); "
            f"{DEBUG_HINT}")


def case_cap(track: Track, status: CaseStatus | str, exit_code: int | None, raw_reason: str) -> str:
    """The platform's own words for why a case failed: the cap that stopped it, never container text."""
    status = CaseStatus(getattr(status, "value", status))
    if status == CaseStatus.ok:
        return ""
    if status == CaseStatus.timeout:
        if raw_reason.startswith("total time limit"):  # platform text: the run ran out of time before this case
            return f"not run: the run's total time limit ({track.total_timeout_s:g} s) was reached"
        return f"time limit exceeded ({track.case_timeout_s:g} s per case)"
    if status == CaseStatus.oom:
        return f"memory limit exceeded ({track.memory_mb} MB)"
    if status == CaseStatus.crash:
        return f"predict.sh exited with code {exit_code}" if exit_code is not None else "predict.sh failed"
    if status == CaseStatus.no_output:
        return "no output file was written for this case"
    return "the output was not a valid prediction for this case"


def _body(raw: str) -> str:
    """A case reason without the worker's "case <id>: " prefix and "(after N s)" suffix."""
    return _AFTER.sub("", _CASE_PREFIX.sub("", raw or ""))


def _reason(track: Track, lvl: Feedback, reason: str, failed: Iterable[FailedCase], *, had_cases: bool) -> str:
    """A run's or submission's reason as ``lvl`` may show it.

    A reason written before any container saw a test case (image refused, loading, infrastructure) holds
    no test-set output and is shown. Otherwise ``none`` says only that details are withheld, and
    ``summary`` rebuilds the worker's reasons from platform text: each quoted case reason becomes the
    cap that stopped the case (:func:`case_cap`); whatever a container wrote is never carried over.
    """
    if lvl == Feedback.full or not reason or not had_cases:
        return reason
    if lvl == Feedback.none:
        return note_for(lvl, "details of runs on the hidden test set")
    failed = list(failed)
    by_id = {c.case_id: c for c in failed}

    def cap(case: FailedCase) -> str:
        return case_cap(track, case.status, case.exit_code, case.reason)

    m = _EVERY.match(reason)
    if m and m.group("id") in by_id:
        return f"{m.group(0)}{cap(by_id[m.group('id')])}"
    m = _STOPPED.match(reason)
    if m:  # fail-fast: "stopped after the first K cases failed: <why> | <why> — <fix> (N remaining cases were not run)"
        caps = list(dict.fromkeys(cap(c) for c in failed[: int(m.group("k"))]))
        fix = reason.rpartition(" — ")[2]
        # the fix is the worker's own text only when the reason ends as the worker ends it (not cut short)
        ok_fix = " — " in reason[m.end():] and _NOT_RUN.search(reason) is not None
        return f"{m.group(0)}{' | '.join(caps)} — {fix if ok_fix else DEBUG_HINT}"
    for m in _CASE_QUOTE.finditer(reason):  # "... case <id>: <quoted reason>": cut at the quote
        if m.group("id") in by_id:
            c = by_id[m.group("id")]
            return f"{reason[:m.start()]}case {c.case_id}: {cap(c)}"
    for c in failed:  # a case reason quoted some other way: cut there
        probe = _body(c.reason)[:24]
        if len(probe) >= 8 and probe in reason and probe != cap(c)[:24]:
            return f"{reason[:reason.index(probe)]}{cap(c)}"
    return reason


def redact(view: Any, *, track: Track, viewer: Member | None, failed: Iterable[FailedCase] = (),
           had_cases: bool = False) -> Any:
    """``view`` (a submission, its results or its logs) as ``viewer`` may see it under the track's policy.

    ``failed``: the latest attempt's failed cases; ``had_cases``: whether that attempt has any case result
    (a reason from before the first case is never test-set output). Returns a new object; marks it with
    the level applied (``feedback``) and a one-line ``feedback_note`` saying what was left out.
    """
    lvl = level(track, viewer)
    failed = list(failed)
    upd: dict[str, Any] = {"feedback": lvl.value}
    if isinstance(view, schemas.SubmissionPublic):
        if lvl != Feedback.full:
            upd["reason"] = _reason(track, lvl, view.reason, failed, had_cases=had_cases)
        if lvl == Feedback.none:
            upd.update(dsc=None, nsd=None, runtime_s=None, aggregates={},
                       progress=view.progress.model_copy(update={"by_status": {}}),
                       feedback_note=note_for(lvl, "scores and per-case results"))
        elif lvl == Feedback.summary:
            upd.update(aggregates={k: v for k, v in view.aggregates.items() if k in SUMMARY_AGGREGATES},
                       feedback_note=note_for(lvl, "per-case scores and logs"))
        return view.model_copy(update=upd)
    if isinstance(view, schemas.SubmissionResults):
        if lvl == Feedback.none:
            upd.update(dsc=None, nsd=None, runtime_s=None, aggregates={}, cases=[],
                       feedback_note=note_for(lvl, "scores and per-case results"))
        elif lvl == Feedback.summary:
            upd.update(aggregates={k: v for k, v in view.aggregates.items() if k in SUMMARY_AGGREGATES},
                       cases=[c.model_copy(update={
                           "dsc": None, "nsd": None, "runtime_s": None, "per_class": {}, "size_class": "",
                           "undefined": False,
                           "peak_memory_bytes": None, "dsc_auc": None, "nsd_auc": None, "iterations": None,
                           "reason": case_cap(track, c.status, c.exit_code, c.reason)}) for c in view.cases],
                       feedback_note=note_for(lvl, "per-case scores"))
        return view.model_copy(update=upd)
    if isinstance(view, schemas.SubmissionLogs):
        if lvl != Feedback.full:
            upd.update(reason=_reason(track, lvl, view.reason, failed, had_cases=had_cases), log_tail="",
                       feedback_note=note_for(lvl, "logs"))
        if lvl == Feedback.none:
            upd["cases"] = []
        elif lvl == Feedback.summary:
            upd["cases"] = [c.model_copy(update={
                "stdout_tail": "", "stderr_tail": "",
                "reason": case_cap(track, c.status, c.exit_code, c.reason)}) for c in view.cases]
        return view.model_copy(update=upd)
    raise TypeError(f"no feedback policy for {type(view).__name__}")
