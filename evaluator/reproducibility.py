"""Reproducibility statistics: a reproduction against the submission it reproduces, case by case.

Pure numpy: both submissions' per-case scores in, differences, bootstrap intervals and a verdict out.
A case missing or failed in one of them scores the worst value (DSC 0, NSD 0, runtime = time limit),
so a reproduction that fails cases cannot look reproduced.

Verdict: "reproduced" when the 95% bootstrap interval of the mean ΔDSC lies within
``[-margin_dsc, margin_dsc]`` and that of the mean ΔNSD within ``[-margin_nsd, margin_nsd]``
(defaults 0.01); otherwise "not reproduced". Δ = reproduction − original.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .failures import charge_failures

__all__ = ["Interval", "ReproResult", "bootstrap_mean_ci", "compare", "REPRODUCED", "NOT_REPRODUCED"]

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    def within(self, margin: float) -> bool:
        """True when the whole interval lies in ``[-margin, margin]``."""
        return -margin <= self.low and self.high <= margin

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high}


@dataclass
class ReproResult:
    cases: list[dict[str, Any]]
    delta_dsc: Interval
    delta_nsd: Interval
    runtime_ratio: float
    margin_dsc: float
    margin_nsd: float
    verdict: str
    n_boot: int
    notes: list[str] = field(default_factory=list)

    @property
    def reproduced(self) -> bool:
        return self.verdict == REPRODUCED

    def to_dict(self) -> dict[str, Any]:
        return {"cases": self.cases, "delta_dsc": self.delta_dsc.to_dict(), "delta_nsd": self.delta_nsd.to_dict(),
                "runtime_ratio": self.runtime_ratio, "margin_dsc": self.margin_dsc, "margin_nsd": self.margin_nsd,
                "verdict": self.verdict, "n_boot": self.n_boot, "notes": list(self.notes)}


def bootstrap_mean_ci(x: np.ndarray, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean of ``x`` (resampling its elements)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"x must be 1-D, got shape {x.shape}")
    if x.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    means = x[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return Interval(float(x.mean()), float(lo), float(hi))


def compare(original: Mapping[str, Sequence[float]], reproduction: Mapping[str, Sequence[float]], *,
            time_limit_s: float | tuple[float, float], margin_dsc: float = 0.01, margin_nsd: float = 0.01,
            n_boot: int = 1000, seed: int = 0, case_ids: Sequence[str] | None = None) -> ReproResult:
    """Compare a reproduction with its original on the same cases.

    Parameters
    ----------
    original, reproduction : mapping
        ``case_id → (dsc, nsd, runtime_s)``; ``NaN`` (or an absent case) means failed/missing.
    time_limit_s : float or (float, float)
        Runtime a failed case counts: the case time limit its run was executed under (one for both, or
        the original's and the reproduction's); see :mod:`evaluator.failures`.
    margin_dsc, margin_nsd : float
        Allowed |mean Δ|: the 95% interval must lie inside ``±margin``.
    case_ids : sequence, optional
        The cases to compare (default: the union of both, sorted).

    Returns
    -------
    ReproResult
        Per-case rows (``case_id, dsc_orig, dsc_repro, delta_dsc, nsd_…, runtime_…, runtime_ratio``),
        mean Δ with 95% percentile-bootstrap intervals (cases resampled jointly for DSC and NSD),
        total-runtime ratio (reproduction / original) and the verdict.
    """
    if margin_dsc < 0 or margin_nsd < 0:
        raise ValueError("margins must be non-negative")
    ids = list(case_ids) if case_ids is not None else sorted(set(original) | set(reproduction))
    notes: list[str] = []

    limit_orig, limit_repro = time_limit_s if isinstance(time_limit_s, tuple) else (time_limit_s, time_limit_s)

    def _side(m: Mapping[str, Sequence[float]], limit: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        nan = (np.nan, np.nan, np.nan)
        raw = np.array([tuple(m.get(cid, nan))[:3] for cid in ids], dtype=np.float64).reshape(len(ids), 3)
        ok = ~(np.isnan(raw[:, 0]) | np.isnan(raw[:, 1]))
        t = np.where(np.isnan(raw[:, 2]), float(limit), raw[:, 2])  # an ok case without a runtime: the limit
        c = charge_failures(raw[:, 0], raw[:, 1], t, ok, float(limit))
        return c.dsc, c.nsd, c.runtime_s, ok

    side0, side1 = _side(original, limit_orig), _side(reproduction, limit_repro)
    rows = []
    arr = np.zeros((len(ids), 6))
    for i, cid in enumerate(ids):
        (d0, s0, t0), ok0 = (float(x[i]) for x in side0[:3]), bool(side0[3][i])
        (d1, s1, t1), ok1 = (float(x[i]) for x in side1[:3]), bool(side1[3][i])
        if not ok0:
            notes.append(f"case {cid}: the original has no valid result (scored as failed)")
        if not ok1:
            notes.append(f"case {cid}: the reproduction has no valid result (scored as failed)")
        arr[i] = (d0, d1, s0, s1, t0, t1)
        rows.append({"case_id": cid, "dsc_orig": d0, "dsc_repro": d1, "delta_dsc": d1 - d0,
                     "nsd_orig": s0, "nsd_repro": s1, "delta_nsd": s1 - s0,
                     "runtime_orig": t0, "runtime_repro": t1,
                     "runtime_ratio": (t1 / t0) if t0 > 0 else float("nan"),
                     "ok_orig": ok0, "ok_repro": ok1})
    ddsc = arr[:, 1] - arr[:, 0]
    dnsd = arr[:, 3] - arr[:, 2]
    if len(ids) == 0:
        nan = Interval(float("nan"), float("nan"), float("nan"))
        return ReproResult([], nan, nan, float("nan"), margin_dsc, margin_nsd, NOT_REPRODUCED, n_boot,
                           ["no cases to compare"])
    # the same resampled case indices for both metrics (paired)
    ci_dsc = bootstrap_mean_ci(ddsc, n_boot=n_boot, seed=seed)
    ci_nsd = bootstrap_mean_ci(dnsd, n_boot=n_boot, seed=seed)
    t_orig, t_rep = arr[:, 4].sum(), arr[:, 5].sum()
    ratio = float(t_rep / t_orig) if t_orig > 0 else float("nan")
    ok = ci_dsc.within(margin_dsc) and ci_nsd.within(margin_nsd)
    return ReproResult(rows, ci_dsc, ci_nsd, ratio, margin_dsc, margin_nsd,
                       REPRODUCED if ok else NOT_REPRODUCED, n_boot, notes)
