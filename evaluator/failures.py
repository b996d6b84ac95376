"""THE rule for a case that did not end ``ok``: it scores DSC 0, NSD 0 and runtime = its case time limit.

Every aggregate of the platform goes through :func:`charge_failures`: the totals stored with a run
(``evaluator.runs.summarize``), the leaderboard's means, per-modality and per-size-class columns and its
aggregate-then-rank ranking (``api.leaderboard``), the reproducibility comparison
(``evaluator.reproducibility``) and the report of ``python -m evaluator`` (``evaluator.aggregate``).

Which limit: the one the case ran against, i.e. the per-case time limit of the RUN it belongs to (copied from
the track when the run was created, ``Run.case_timeout_s``), not the track's current setting. An organizer
who changes a track's limit afterwards changes neither the stored totals nor the board of runs made before;
a re-run (new attempt) runs, and is charged, under the new limit. ``time_limit_s`` may therefore be a scalar
or one value per case (cases of runs with different limits side by side).

A missing case (expected, never recorded) counts as failed. Pure numpy, no project imports.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = ["FAILED_DSC", "FAILED_NSD", "Charged", "charge_failures", "run_time_limit"]

#: what a failed case scores
FAILED_DSC = 0.0
FAILED_NSD = 0.0

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]


def run_time_limit(run_limit_s: float | None, track_limit_s: float) -> float:
    """The per-case time limit a run's failed cases are charged: the run's own (``Run.case_timeout_s``, recorded when
    the run was created: the limit its cases ran against); the track's current limit only for a run that recorded
    none (made before the column existed).

    >>> run_time_limit(60, 600), run_time_limit(None, 600)
    (60.0, 600.0)
    """
    return float(run_limit_s) if run_limit_s is not None else float(track_limit_s)


class Charged(NamedTuple):
    """Per-case values with every failed case charged (float64 arrays of one shape)."""

    dsc: FloatArray
    nsd: FloatArray
    runtime_s: FloatArray


def charge_failures(dsc: ArrayLike, nsd: ArrayLike, runtime_s: ArrayLike, ok: ArrayLike,
                    time_limit_s: ArrayLike) -> Charged:
    """``dsc``, ``nsd`` and ``runtime_s`` with every case where ``ok`` is False set to DSC 0, NSD 0 and runtime
    ``time_limit_s`` (the limit of the run the case belongs to: a scalar, or one value per case).

    The arrays may have any shape (one entry's cases, or entries × cases); ``ok`` and ``time_limit_s`` broadcast
    against them. Values of ok cases are returned unchanged (NaN included: what an undefined score means is
    the caller's aggregate's business); a NaN limit (unknown) leaves a failed case's runtime NaN. Inputs are not
    modified.

    >>> charge_failures([0.9, 0.5], [0.8, 0.4], [3.0, 1.0], [True, False], 60.0).runtime_s.tolist()
    [3.0, 60.0]
    """
    d = np.array(dsc, dtype=np.float64)
    n = np.array(nsd, dtype=np.float64)
    t = np.array(runtime_s, dtype=np.float64)
    if not d.shape == n.shape == t.shape:
        raise ValueError(f"dsc, nsd and runtime_s must have one shape, got {d.shape}, {n.shape}, {t.shape}")
    failed = ~np.broadcast_to(np.asarray(ok, dtype=bool), d.shape)
    limit = np.broadcast_to(np.asarray(time_limit_s, dtype=np.float64), d.shape)
    d[failed] = FAILED_DSC
    n[failed] = FAILED_NSD
    t[failed] = limit[failed]
    return Charged(d, n, t)
