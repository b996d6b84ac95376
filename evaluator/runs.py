"""Run-level pure helpers of the trusted scorer (api/execution/scoring.py): a run's aggregates and the
fail-fast rule.

Moved here from the former single-host runner (``summarize`` and the body of ``_fail_fast``) so the API's
trusted side has them without importing ``worker``. Pure: works on any objects with ``dsc``, ``nsd``,
``runtime_s``, ``status`` (an enum with ``.value`` or a string), ``modality`` and ``size_class``.
"""

from __future__ import annotations

import math
import re
from typing import Any
from collections.abc import Iterable, Sequence

from .failures import charge_failures
from .io import bound_text

__all__ = ["summarize", "fail_fast_reason", "FAIL_FAST_HINTS", "status_value", "score_or_zero", "score_or_nan"]


def status_value(status: Any) -> str:
    """'ok', 'timeout', ... from a CaseStatus enum or a plain string."""
    return str(getattr(status, "value", status))


def summarize(cases: Sequence[Any], *, time_limit_s: float, size_classes: Sequence[str] = ()) -> dict[str, Any]:
    """Aggregates of a run's case results, failed cases charged by :func:`evaluator.failures.charge_failures`
    (DSC 0, NSD 0, runtime ``time_limit_s``: the case time limit the run was executed under). ``by_size_class``
    follows ``size_classes`` (the caller passes ``data_manifests.SIZE_CLASSES``), other classes after, sorted."""
    cases = list(cases)
    ok = [status_value(c.status) == "ok" for c in cases]
    # an ok case's NULL score is undefined (cvpr24: a label absent from both masks): NaN, left out of the means
    charged = charge_failures([score_or_nan(c.dsc) for c in cases], [score_or_nan(c.nsd) for c in cases],
                              [score_or_zero(c.runtime_s) for c in cases], ok, time_limit_s)

    def agg(idx: list[int]) -> dict[str, Any]:
        if not idx:
            return {"n": 0, "dsc": None, "nsd": None, "runtime_s": None}
        return {"n": len(idx), "dsc": _defined_mean(charged.dsc[idx]), "nsd": _defined_mean(charged.nsd[idx]),
                "runtime_s": float(charged.runtime_s[idx].mean())}

    out = agg(list(range(len(cases))))
    counts: dict[str, int] = {}
    for c in cases:
        counts[status_value(c.status)] = counts.get(status_value(c.status), 0) + 1
    out["status_counts"] = counts
    out["ok"] = counts.get("ok", 0)
    out["failed"] = len(cases) - out["ok"]
    out["total_runtime_s"] = float(charged.runtime_s.sum())
    out["by_modality"] = {m: agg([i for i, c in enumerate(cases) if c.modality == m])
                          for m in sorted({c.modality for c in cases})}
    present = {c.size_class for c in cases if c.size_class}
    order = [k for k in size_classes if k in present] + sorted(present - set(size_classes))
    out["by_size_class"] = {k: agg([i for i, c in enumerate(cases) if c.size_class == k]) for k in order}
    return out


def score_or_nan(x: Any) -> float:
    """A stored DSC/NSD as a float; NULL or NaN (an undefined score: cvpr24's label absent from both masks) stays
    NaN, left out of means and per-case ranks (failed cases are charged by ``charge_failures`` after)."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _defined_mean(values: Any) -> float | None:
    """The mean of the defined values (pandas' ``mean``: NaN skipped); None when none is defined."""
    vals = [float(v) for v in values if not math.isnan(float(v))]
    return (sum(vals) / len(vals)) if vals else None


def score_or_zero(x: Any) -> float:
    """A stored score or time as a float: NULL, non-numbers and NaN (an undefined score of an ok case) count 0, as the
    scorer stores them and the board reads them."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if math.isnan(v) else v


#: what to change, by the status of the cases that stopped a run early
FAIL_FAST_HINTS = {
    "crash": "make predict.sh exit 0",
    "no_output": "write /workspace/outputs/<input file name> for the input",
    "invalid_output": "write an integer 'segs' label map of the input's shape, and nothing else",
    "timeout": "finish each case within the time limit",
    "oom": "stay under the memory limit",
}


def fail_fast_reason(k: int, seen: Iterable[tuple[Any, str]], *, remaining: int) -> str:
    """The reason to stop a run now, or "": its first ``k`` cases (``seen``: (status, reason) in test-set
    order) all failed by the participant's fault and cases remain to be run (``k`` 0 disables the rule).
    Every recorded non-ok status is the participant's fault: infrastructure failures end the attempt (or
    the shard's delivery) and are retried, they never become case results."""
    seen = list(seen)
    if k <= 0 or len(seen) != k or remaining <= 0:
        return ""
    if any(status_value(st) == "ok" for st, _ in seen):
        return ""
    why: list[str] = []
    hints: list[str] = []
    for st, reason in seen:
        text = re.sub(r"^case \S+: ", "", reason or status_value(st))
        text = re.sub(r" \(after [0-9.]+ s\)$", "", text)
        text = bound_text(text, 300)
        if text not in why:
            why.append(text)
        hint = FAIL_FAST_HINTS.get(status_value(st))
        if hint and hint not in hints:
            hints.append(hint)
    fix = "; ".join(hints + ["run `segarena check` on your image archive: it runs the image on public sample "
                             "cases under this track's limits and shows its logs; then submit again"])
    return (f"stopped after the first {k} cases failed: {' | '.join(why)} — {fix} "
            f"({remaining} remaining cases were not run)")
