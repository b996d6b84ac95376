"""Ranking schemes for leaderboards: pure numpy/scipy, no I/O.

Two named schemes (the name is shown on every leaderboard):

``rank_then_aggregate`` (default, "Rank-then-aggregate")
    For every case and every metric (DSC ↑, NSD ↑, runtime ↓) the entries are ranked; ties share
    the lowest rank (``min``); a missing or failed case (``NaN``) gets the worst rank, i.e. it ranks
    after every entry with a value (all missing entries of a case share that rank). An entry's
    score is the mean of all its (case, metric) ranks; the final rank orders entries by that mean
    (lower is better, ties share the lowest rank). This is challengeR's ``rankThenAggregate`` and
    what FLARE22 did.

``aggregate_then_rank`` ("Aggregate-then-rank")
    Missing or failed cases take the metric's worst value (DSC 0, NSD 0, runtime = the case time
    limit of their run: pass values charged by :func:`evaluator.failures.charge_failures`); each
    metric is averaged over cases; the entries are ranked per metric; the score is the mean of the
    metric ranks (with a single metric: the rank of the mean itself).

The input everywhere is ``values``: a mapping metric name → array of shape ``(n_entries, n_cases)``
(``NaN`` = missing/failed), and ``metrics``: the :class:`Metric` specs, in order.

Undefined scores (``undefined``: metric name → boolean ``(n_entries, n_cases)``, optional): a score the profile
leaves undefined (``cvpr24``: a label of ``1..gt.max()`` absent from both masks, an empty field in the 2024
reference's CSV) is NOT a failure. It is left out: it takes no rank in its case (the other entries are ranked
among themselves, as if it were not there) and is not part of the entry's mean rank (rank-then-aggregate) or of
its metric mean (aggregate-then-rank) — pandas' ``mean``, which the reference's tables used, skipped empty fields.

Organizers also get :func:`bootstrap_stability` (resample cases, Kendall's τ of each resampled
ranking to the full one) and :func:`significance_map` (one-sided paired Wilcoxon signed-rank tests
of every ordered pair, Holm-corrected).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Mapping, Sequence

import numpy as np

from .failures import FAILED_DSC, FAILED_NSD

__all__ = [
    "Metric",
    "DEFAULT_METRICS",
    "SCHEMES",
    "DEFAULT_SCHEME",
    "scheme_label",
    "Ranking",
    "rank_min",
    "rank_cases",
    "rank_then_aggregate",
    "aggregate_then_rank",
    "rank_entries",
    "Stability",
    "bootstrap_stability",
    "kendall_tau",
    "holm",
    "SignificanceMap",
    "significance_map",
]


@dataclass(frozen=True)
class Metric:
    """A ranked metric: its column name, direction and the value a missing case takes."""

    name: str
    higher_is_better: bool = True
    worst: float = 0.0
    label: str = ""


#: DSC ↑, NSD ↑, runtime ↓. A failed case's values come from :func:`evaluator.failures.charge_failures` (DSC 0,
#: NSD 0, runtime = the time limit of the run it belongs to): callers pass charged matrices where a scheme needs
#: values (aggregate-then-rank, significance), so these ``worst`` values only fill what was left NaN.
DEFAULT_METRICS: tuple[Metric, ...] = (
    Metric("dsc", True, FAILED_DSC, "DSC"),
    Metric("nsd", True, FAILED_NSD, "NSD"),
    Metric("runtime_s", False, float("inf"), "Runtime (s)"),
)

SCHEMES: dict[str, str] = {
    "rank_then_aggregate": "Rank-then-aggregate (mean of per-case, per-metric ranks; missing = worst rank)",
    "aggregate_then_rank": "Aggregate-then-rank (mean per metric, missing = worst value; mean of metric ranks)",
}
DEFAULT_SCHEME = "rank_then_aggregate"


def scheme_label(name: str) -> str:
    """The human label of a scheme name (ValueError for an unknown one)."""
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown ranking scheme {name!r}; use one of {sorted(SCHEMES)}") from None


@dataclass
class Ranking:
    """The result of a scheme: per-entry score (lower is better) and final rank (1 = best)."""

    scheme: str
    score: np.ndarray
    rank: np.ndarray
    detail: dict[str, np.ndarray] = field(default_factory=dict)


def rank_min(x: np.ndarray, *, higher_is_better: bool, axis: int = 0) -> np.ndarray:
    """Competition ranks ("min" ties) along ``axis``; ``NaN`` ranks after every value.

    Parameters
    ----------
    x : ndarray
        Values; ``NaN`` marks a missing value.
    higher_is_better : bool
        Direction of the metric.
    axis : int
        The axis holding the entries to rank against each other.

    Returns
    -------
    ndarray of float64
        Rank of each value: 1 + the number of values strictly better than it, where every value is
        strictly better than ``NaN`` and ``NaN``s tie with each other.
    """
    a = np.asarray(x, dtype=np.float64)
    a = np.moveaxis(a, axis, 0)
    key = -a if higher_is_better else a.copy()
    key[np.isnan(key)] = np.inf  # missing: worse than anything, ties with other missing
    # rank = 1 + #{j : key_j < key_i}; also make +inf values rank before NaN
    inf_real = np.isinf(key) & ~np.isnan(a)
    key = np.where(inf_real, np.finfo(np.float64).max, key)
    srt = np.sort(key, axis=0)
    n = key.shape[0]
    flat_key = key.reshape(n, -1)
    flat_srt = srt.reshape(n, -1)
    out = np.empty_like(flat_key)
    for j in range(flat_key.shape[1]):
        out[:, j] = np.searchsorted(flat_srt[:, j], flat_key[:, j], side="left") + 1
    return np.moveaxis(out.reshape(key.shape), 0, axis)


def _check(values: Mapping[str, np.ndarray], metrics: Sequence[Metric]) -> tuple[int, int]:
    if not metrics:
        raise ValueError("at least one metric is needed")
    shape = None
    for m in metrics:
        if m.name not in values:
            raise ValueError(f"values has no column for metric {m.name!r}")
        a = np.asarray(values[m.name])
        if a.ndim != 2:
            raise ValueError(f"values[{m.name!r}] must be (n_entries, n_cases), got shape {a.shape}")
        if shape is not None and a.shape != shape:
            raise ValueError(f"values[{m.name!r}] has shape {a.shape}, expected {shape}")
        shape = a.shape
    assert shape is not None
    return shape


def _undefined_mask(undefined: Mapping[str, np.ndarray] | None, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The boolean mask of undefined cells of metric ``name`` (all False when none is given)."""
    if undefined is None or name not in undefined:
        return np.zeros(shape, dtype=bool)
    mask = np.asarray(undefined[name], dtype=bool)
    if mask.shape != shape:
        raise ValueError(f"undefined[{name!r}] has shape {mask.shape}, expected {shape}")
    return mask


def rank_cases(values: Mapping[str, np.ndarray], metrics: Sequence[Metric] = DEFAULT_METRICS, *,
               undefined: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Per-case, per-metric ranks: array ``(n_metrics, n_entries, n_cases)``; an undefined cell's rank is ``NaN``
    and it counts as better than no other entry of its case."""
    shape = _check(values, metrics)
    out = []
    for m in metrics:
        a = np.array(values[m.name], dtype=np.float64)
        mask = _undefined_mask(undefined, m.name, shape)
        a[mask] = np.nan  # never strictly better than anyone: the others' ranks do not see it
        ranks = rank_min(a, higher_is_better=m.higher_is_better)
        ranks[mask] = np.nan
        out.append(ranks)
    return np.stack(out)


def _nanmean(a: np.ndarray, axis: Any) -> np.ndarray:
    """``np.nanmean`` without the all-NaN warning (an entry with no defined value keeps NaN: ranked last)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(np.nanmean(a, axis=axis))


def _final_rank(score: np.ndarray) -> np.ndarray:
    return rank_min(score, higher_is_better=False).astype(np.int64)


def rank_then_aggregate(values: Mapping[str, np.ndarray], metrics: Sequence[Metric] = DEFAULT_METRICS, *,
                        undefined: Mapping[str, np.ndarray] | None = None) -> Ranking:
    """Rank per case and metric, average the ranks, rank the averages (see the module docstring); undefined
    cells are left out of the ranks and of the means."""
    n, k = _check(values, metrics)
    if k == 0:
        score = np.zeros(n)
        return Ranking("rank_then_aggregate", score, _final_rank(score))
    ranks = rank_cases(values, metrics, undefined=undefined)
    score = _nanmean(ranks, axis=(0, 2))
    detail = {m.name: _nanmean(ranks[i], axis=1) for i, m in enumerate(metrics)}
    return Ranking("rank_then_aggregate", score, _final_rank(score), detail)


def _filled(values: Mapping[str, np.ndarray], m: Metric) -> np.ndarray:
    a = np.asarray(values[m.name], dtype=np.float64)
    return np.where(np.isnan(a), m.worst, a)


def _filled_defined(values: Mapping[str, np.ndarray], m: Metric,
                    undefined: Mapping[str, np.ndarray] | None) -> np.ndarray:
    """:func:`_filled` with the undefined cells NaN again (left out of the means)."""
    a = _filled(values, m)
    a[_undefined_mask(undefined, m.name, a.shape)] = np.nan
    return a


def aggregate_then_rank(values: Mapping[str, np.ndarray], metrics: Sequence[Metric] = DEFAULT_METRICS, *,
                        undefined: Mapping[str, np.ndarray] | None = None) -> Ranking:
    """Average each metric (missing = worst value, undefined left out), rank per metric, average the metric
    ranks."""
    n, k = _check(values, metrics)
    means = {m.name: (_nanmean(_filled_defined(values, m, undefined), axis=1) if k else np.zeros(n))
             for m in metrics}
    metric_ranks = np.stack([rank_min(means[m.name], higher_is_better=m.higher_is_better) for m in metrics])
    score = metric_ranks.mean(axis=0)
    return Ranking("aggregate_then_rank", score, _final_rank(score), means)


def rank_entries(values: Mapping[str, np.ndarray], *, scheme: str = DEFAULT_SCHEME,
                 metrics: Sequence[Metric] = DEFAULT_METRICS,
                 undefined: Mapping[str, np.ndarray] | None = None) -> Ranking:
    """Rank entries by the named scheme (``undefined``: see the module docstring)."""
    scheme_label(scheme)
    if scheme == "aggregate_then_rank":
        return aggregate_then_rank(values, metrics, undefined=undefined)
    return rank_then_aggregate(values, metrics, undefined=undefined)


# --------------------------------------------------------------------------- stability


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's τ-b between two rankings (1.0 when either is constant and they agree trivially)."""
    from scipy.stats import kendalltau

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size < 2:
        return 1.0
    if np.all(a == a[0]) or np.all(b == b[0]):
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(kendalltau(a, b).statistic)


def _kendall_many(ref: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Kendall's τ-b of ``ref`` (n,) against each column of ``ranks`` (n, b); same as :func:`kendall_tau`."""
    n = ref.shape[0]
    if n < 2:
        return np.ones(ranks.shape[1])
    i, j = np.triu_indices(n, 1)
    sa = np.sign(ref[i] - ref[j]).astype(np.float64)  # (pairs,)
    sb = np.sign(ranks[i] - ranks[j]).astype(np.float64)  # (pairs, b)
    num = sa @ sb
    n0 = i.size
    den = np.sqrt((n0 - np.count_nonzero(sa == 0)) * (n0 - np.count_nonzero(sb == 0, axis=0)).astype(np.float64))
    out = np.empty(ranks.shape[1])
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    # a constant ranking: τ is undefined; 1 when it equals the reference, else 0 (as kendall_tau)
    for b in np.flatnonzero(~ok):
        out[b] = 1.0 if np.array_equal(ref, ranks[:, b]) else 0.0
    return out


@dataclass
class Stability:
    """Bootstrap stability: τ per resample and each entry's rank distribution."""

    scheme: str
    n_boot: int
    full_rank: np.ndarray
    taus: np.ndarray
    rank_counts: np.ndarray  # (n_entries, n_entries): rank_counts[i, r-1] = #resamples with rank r

    @property
    def tau_mean(self) -> float:
        return float(np.mean(self.taus)) if self.taus.size else 1.0

    @property
    def tau_median(self) -> float:
        return float(np.median(self.taus)) if self.taus.size else 1.0

    def to_dict(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON-ready summary (optionally with entry names)."""
        n = len(self.full_rank)
        names = list(names) if names is not None else [str(i) for i in range(n)]
        q = np.quantile(self.taus, [0.025, 0.5, 0.975]) if self.taus.size else np.array([1.0, 1.0, 1.0])
        entries = []
        for i in range(n):
            counts = self.rank_counts[i]
            ranks = np.repeat(np.arange(1, n + 1), counts)
            entries.append({
                "name": names[i],
                "rank": int(self.full_rank[i]),
                "rank_median": float(np.median(ranks)) if ranks.size else float(self.full_rank[i]),
                "rank_p2_5": float(np.quantile(ranks, 0.025)) if ranks.size else float(self.full_rank[i]),
                "rank_p97_5": float(np.quantile(ranks, 0.975)) if ranks.size else float(self.full_rank[i]),
                "rank_freq": [round(float(c) / max(self.n_boot, 1), 4) for c in counts],
            })
        return {"scheme": self.scheme, "n_boot": self.n_boot, "tau_mean": self.tau_mean,
                "tau_median": float(q[1]), "tau_p2_5": float(q[0]), "tau_p97_5": float(q[2]),
                "entries": entries}


def bootstrap_stability(values: Mapping[str, np.ndarray], *, scheme: str = DEFAULT_SCHEME,
                        metrics: Sequence[Metric] = DEFAULT_METRICS, n_boot: int = 1000,
                        seed: int = 0, undefined: Mapping[str, np.ndarray] | None = None) -> Stability:
    """Resample the cases with replacement ``n_boot`` times, re-rank, and compare to the full ranking.

    Returns Kendall's τ of every resampled ranking against the full ranking and each entry's rank
    frequencies (challengeR's ``bootstrap`` + ``kendall``).
    """
    n, k = _check(values, metrics)
    full = rank_entries(values, scheme=scheme, metrics=metrics, undefined=undefined).rank
    rng = np.random.default_rng(seed)
    taus = np.empty(n_boot)
    counts = np.zeros((n, n), dtype=np.int64)
    if k == 0 or n == 0:
        return Stability(scheme, n_boot, full, np.ones(n_boot), counts)
    idx = rng.integers(0, k, size=(n_boot, k))
    if scheme == "rank_then_aggregate":
        # a case's ranks do not depend on the other cases: rank once, resample the columns
        case_ranks = rank_cases(values, metrics, undefined=undefined)  # (m, n, k); undefined NaN
        defined = (~np.isnan(case_ranks)).sum(axis=0)  # (n, k): how many metric ranks each cell has
        rank_sum = np.nan_to_num(case_ranks).sum(axis=0)
        scores = np.stack([rank_sum[:, idx[b]].sum(axis=1) / defined[:, idx[b]].sum(axis=1).clip(min=1)
                           for b in range(n_boot)], axis=1)  # (n, n_boot): mean over the defined ranks
    else:
        filled = np.stack([_filled_defined(values, m, undefined) for m in metrics])  # (m, n, k)
        metric_ranks = []
        for i, m in enumerate(metrics):
            means = np.stack([_nanmean(filled[i][:, idx[b]], axis=1) for b in range(n_boot)], axis=1)  # (n, n_boot)
            metric_ranks.append(rank_min(means, higher_is_better=m.higher_is_better))
        scores = np.mean(metric_ranks, axis=0)
    ranks = rank_min(scores, higher_is_better=False).astype(np.int64)  # (n, n_boot)
    taus = _kendall_many(full, ranks)
    for b in range(n_boot):
        counts[np.arange(n), ranks[:, b] - 1] += 1
    return Stability(scheme, n_boot, full, taus, counts)


# --------------------------------------------------------------------------- significance


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (same shape; ``NaN`` entries are left out and kept ``NaN``)."""
    p = np.asarray(pvalues, dtype=np.float64)
    flat = p.ravel()
    ok = np.flatnonzero(~np.isnan(flat))
    out = np.full(flat.shape, np.nan)
    m = ok.size
    if m == 0:
        return out.reshape(p.shape)
    order = ok[np.argsort(flat[ok], kind="mergesort")]
    adj = np.maximum.accumulate((m - np.arange(m)) * flat[order])
    out[order] = np.minimum(adj, 1.0)
    return out.reshape(p.shape)


@dataclass
class SignificanceMap:
    """``significant[i, j]``: entry i is significantly better than entry j (Holm-adjusted p < α)."""

    metric: str
    alpha: float
    pvalues: np.ndarray  # raw one-sided p-values, NaN on the diagonal
    adjusted: np.ndarray
    significant: np.ndarray

    def to_dict(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        n = self.pvalues.shape[0]
        names = list(names) if names is not None else [str(i) for i in range(n)]

        def _clean(a: np.ndarray) -> list[list[float | None]]:
            return [[None if np.isnan(v) else round(float(v), 6) for v in row] for row in a]

        return {"metric": self.metric, "alpha": self.alpha, "test": "one-sided paired Wilcoxon signed-rank",
                "correction": "Holm", "names": names, "pvalues": _clean(self.pvalues),
                "adjusted": _clean(self.adjusted), "significant": self.significant.astype(bool).tolist()}


def significance_map(values: Mapping[str, np.ndarray], *, metric: Metric = DEFAULT_METRICS[0],
                     alpha: float = 0.05) -> SignificanceMap:
    """One-sided paired Wilcoxon signed-rank test of every ordered pair (i better than j), Holm-corrected.

    Missing cases take the metric's worst value. A pair with all differences zero gets p = 1.
    """
    from scipy.stats import wilcoxon

    a = _filled(values, metric)
    n = a.shape[0]
    p = np.full((n, n), np.nan)
    alternative = "greater" if metric.higher_is_better else "less"
    ii, jj = np.nonzero(~np.eye(n, dtype=bool))
    if ii.size and a.shape[1]:
        d = a[ii] - a[jj]  # (pairs, cases): one vectorized test per ordered pair
        all_zero = np.all(d == 0, axis=1)
        some_zero = np.any(d == 0, axis=1) & ~all_zero
        pv = np.ones(ii.size)  # identical entries: no evidence either way
        clean = ~all_zero & ~some_zero
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if clean.any():  # one vectorized call for the common case
                pv[clean] = wilcoxon(d[clean], axis=1, alternative=alternative, zero_method="wilcox").pvalue
            for r in np.flatnonzero(some_zero):  # zeros change scipy's method choice: test these one by one
                pv[r] = wilcoxon(d[r], alternative=alternative, zero_method="wilcox").pvalue
        p[ii, jj] = pv
    elif ii.size:
        p[ii, jj] = 1.0
    adj = holm(p)
    sig = np.where(np.isnan(adj), False, adj < alpha)
    return SignificanceMap(metric.name, alpha, p, adj, sig)
