"""Run-level pure helpers of the trusted scorer (api/execution/scoring.py): a run's aggregates and the
fail-fast rule.

Moved here from the former single-host runner (``summarize`` and the body of ``_fail_fast``) so the API's
trusted side has them without importing ``worker``. Pure: works on any objects with ``dsc``, ``nsd``,
``runtime_s``, ``status`` (an enum with ``.value`` or a string), ``modality`` and ``size_class``.
"""

from __future__ import annotations

import re
import statistics
from typing import Any, Iterable, Sequence

from .io import bound_text

__all__ = ["summarize", "fail_fast_reason", "FAIL_FAST_HINTS", "status_value"]


def status_value(status: Any) -> str:
    """'ok', 'timeout', ... from a CaseStatus enum or a plain string."""
    return str(getattr(status, "value", status))


def summarize(cases: Sequence[Any]) -> dict[str, Any]:
    """Aggregates of a run's case results (failed cases at their worst values)."""

    def agg(rows: list[Any]) -> dict[str, Any]:
        if not rows:
            return {"n": 0, "dsc": None, "nsd": None, "runtime_s": None}
        return {"n": len(rows), "dsc": statistics.fmean(c.dsc for c in rows),
                "nsd": statistics.fmean(c.nsd for c in rows), "runtime_s": statistics.fmean(c.runtime_s for c in rows)}

    cases = list(cases)
    out = agg(cases)
    counts: dict[str, int] = {}
    for c in cases:
        counts[status_value(c.status)] = counts.get(status_value(c.status), 0) + 1
    out["status_counts"] = counts
    out["ok"] = counts.get("ok", 0)
    out["failed"] = len(cases) - out["ok"]
    out["total_runtime_s"] = sum(c.runtime_s for c in cases)
    out["by_modality"] = {m: agg([c for c in cases if c.modality == m]) for m in sorted({c.modality for c in cases})}
    out["by_size_class"] = {k: agg([c for c in cases if c.size_class == k])
                            for k in ("small", "medium", "large") if any(c.size_class == k for c in cases)}
    return out


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
