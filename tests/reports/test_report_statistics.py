"""The report's statistics on hand-made data, checked against scipy.stats and by hand.

Bootstrap ranking stability (:func:`evaluator.ranking.bootstrap_stability`): seeded, ≥ 1000 samples, a dominant order
is stable, a noise ranking is not, and every resample's τ equals scipy's Kendall τ-b of the same resample.
Significance (:func:`evaluator.ranking.significance_map`): a clearly better team is significant, identical and
tied teams are not, the raw p-values are scipy's one-sided Wilcoxon signed-rank and the adjusted ones Holm's.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import stats

from evaluator.ranking import (
    DEFAULT_METRICS,
    Metric,
    bootstrap_stability,
    rank_entries,
    significance_map,
)

DSC = (Metric("dsc", True, 0.0, "DSC"),)


def _teams(rng: np.random.Generator, means: list[float], k: int = 40, sd: float = 0.03) -> np.ndarray:
    case_effect = rng.normal(0, 0.1, size=k)  # cases differ in difficulty, teams share it (paired design)
    return np.clip(np.array(means)[:, None] + case_effect[None, :] + rng.normal(0, sd, size=(len(means), k)), 0, 1)


def test_bootstrap_is_seeded_and_counts_every_sample():
    rng = np.random.default_rng(1)
    dsc = _teams(rng, [0.80, 0.79, 0.78, 0.6])
    a = bootstrap_stability({"dsc": dsc}, metrics=DSC, n_boot=1000, seed=7)
    b = bootstrap_stability({"dsc": dsc}, metrics=DSC, n_boot=1000, seed=7)
    c = bootstrap_stability({"dsc": dsc}, metrics=DSC, n_boot=1000, seed=8)
    assert np.array_equal(a.taus, b.taus) and np.array_equal(a.rank_counts, b.rank_counts)
    assert not np.array_equal(a.taus, c.taus)
    assert (a.rank_counts.sum(axis=1) == 1000).all()  # every entry has one rank per resample
    d = a.to_dict(["A", "B", "C", "D"])
    assert d["n_boot"] == 1000 and all(abs(sum(e["rank_freq"]) - 1) < 1e-3 for e in d["entries"])
    # the clearly worst team is last in (almost) every resample; the close three swap
    assert d["entries"][3]["rank_freq"][3] > 0.99
    assert max(d["entries"][0]["rank_freq"]) < 0.999


def test_bootstrap_taus_equal_scipy_kendall_of_the_same_resamples():
    rng = np.random.default_rng(2)
    dsc = _teams(rng, [0.7, 0.7, 0.69, 0.68, 0.5], k=25, sd=0.08)
    nsd = _teams(rng, [0.7, 0.71, 0.69, 0.66, 0.5], k=25, sd=0.08)
    rt = rng.uniform(1, 5, size=dsc.shape)
    values = {"dsc": dsc, "nsd": nsd, "runtime_s": rt}
    for scheme in ("rank_then_aggregate", "aggregate_then_rank"):
        st = bootstrap_stability(values, scheme=scheme, n_boot=1000, seed=3)
        full = rank_entries(values, scheme=scheme).rank
        # the same resamples, drawn again and ranked one by one
        idx = np.random.default_rng(3).integers(0, dsc.shape[1], size=(1000, dsc.shape[1]))
        for b in range(0, 1000, 97):
            res = {m: v[:, idx[b]] for m, v in values.items()}
            ranks = rank_entries(res, scheme=scheme).rank
            tau = stats.kendalltau(full, ranks).statistic
            if np.isnan(tau):
                tau = 1.0 if np.array_equal(full, ranks) else 0.0
            assert st.taus[b] == pytest.approx(tau, abs=1e-12), (scheme, b)


def test_bootstrap_of_a_dominant_order_is_stable_and_of_noise_is_not():
    rng = np.random.default_rng(4)
    clear = _teams(rng, [0.9, 0.7, 0.5, 0.3], sd=0.01)
    st = bootstrap_stability({"dsc": clear}, metrics=DSC, n_boot=1000, seed=0)
    assert st.tau_mean == 1.0 and (np.diag(st.rank_counts) == 1000).all()
    noise = rng.uniform(0.5, 0.9, size=(6, 30))
    st = bootstrap_stability({"dsc": noise}, metrics=DSC, n_boot=1000, seed=0)
    assert st.tau_mean < 0.8 and st.rank_counts.max() < 1000  # no entry keeps its rank in every resample


def test_bootstrap_is_fast_enough_for_a_report():
    rng = np.random.default_rng(5)
    values = {"dsc": rng.uniform(size=(50, 200)), "nsd": rng.uniform(size=(50, 200)),
              "runtime_s": rng.uniform(1, 10, size=(50, 200))}
    t0 = time.perf_counter()
    for scheme in ("rank_then_aggregate", "aggregate_then_rank"):
        bootstrap_stability(values, scheme=scheme, n_boot=1000, seed=0)
    assert time.perf_counter() - t0 < 20  # 50 teams × 200 cases, both schemes (about 1 s on one idle core)


def test_a_clearly_better_team_is_significant_and_ties_are_not():
    rng = np.random.default_rng(6)
    base = _teams(rng, [0.7], k=30, sd=0.0)[0]
    better = np.clip(base + 0.08 + rng.normal(0, 0.01, size=30), 0, 1)
    same = base.copy()  # identical results: all differences zero
    tied = base + rng.normal(0, 0.02, size=30)  # same level, noise only
    dsc = np.stack([better, base, same, tied])
    sm = significance_map({"dsc": dsc}, metric=DEFAULT_METRICS[0])
    assert sm.significant[0, 1] and sm.significant[0, 2] and sm.significant[0, 3]
    assert not sm.significant[1, 0] and not sm.significant[2, 0]
    assert not sm.significant[1, 2] and not sm.significant[2, 1]  # identical: p = 1
    assert sm.pvalues[1, 2] == 1.0
    assert not sm.significant[1, 3] and not sm.significant[3, 1]
    assert not sm.significant.diagonal().any()


def test_significance_p_values_are_scipy_wilcoxon_with_holm():
    rng = np.random.default_rng(7)
    dsc = _teams(rng, [0.75, 0.74, 0.72, 0.7], k=20, sd=0.03)
    sm = significance_map({"dsc": dsc}, metric=DEFAULT_METRICS[0], alpha=0.05)
    n = dsc.shape[0]
    raw = {}
    for i in range(n):
        for j in range(n):
            if i != j:
                raw[i, j] = stats.wilcoxon(dsc[i], dsc[j], alternative="greater").pvalue
                assert sm.pvalues[i, j] == pytest.approx(raw[i, j], rel=1e-9)
    # Holm by hand: sort ascending, multiply by (m - k), running maximum, cap at 1
    order = sorted(raw, key=raw.get)
    m, running = len(order), 0.0
    for k, pair in enumerate(order):
        running = max(running, min(1.0, (m - k) * raw[pair]))
        assert sm.adjusted[pair] == pytest.approx(running, rel=1e-9)
        assert sm.significant[pair] == (running < 0.05)


def test_significance_of_runtime_prefers_the_faster_team():
    rng = np.random.default_rng(8)
    fast = rng.uniform(1, 2, size=25)
    slow = fast + rng.uniform(0.5, 1.5, size=25)
    sm = significance_map({"runtime_s": np.stack([fast, slow])}, metric=DEFAULT_METRICS[2])
    assert sm.significant[0, 1] and not sm.significant[1, 0]
    assert sm.pvalues[0, 1] == pytest.approx(stats.wilcoxon(fast, slow, alternative="less").pvalue)
