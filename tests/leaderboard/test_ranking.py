"""Ranking schemes, stability, significance and reproducibility statistics (pure code)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluator.ranking import (
    DEFAULT_METRICS,
    Metric,
    aggregate_then_rank,
    bootstrap_stability,
    holm,
    kendall_tau,
    rank_entries,
    rank_min,
    rank_then_aggregate,
    scheme_label,
    significance_map,
)
from evaluator.reproducibility import NOT_REPRODUCED, REPRODUCED, bootstrap_mean_ci, compare

DSC = (Metric("dsc", True, 0.0, "DSC"),)
NAN = float("nan")

# The ranking-scheme fixture (FLARE22-style rules, as in the CVPR 2024 challenge): 3 teams (A, B, C) × 4 cases, DSC
# only, C misses case 4.
#
#            case1  case2  case3  case4   mean (missing→0)
#   A        0.60   0.62   0.58   0.50    2.30/4 = 0.575
#   B        0.55   0.57   0.56   0.96    2.64/4 = 0.660
#   C        0.80   0.82   0.78   —       2.40/4 = 0.600
#
# Rank-then-aggregate, per case ranks (ties "min", missing = worst):
#   case1: C 1, A 2, B 3   case2: C 1, A 2, B 3   case3: C 1, A 2, B 3   case4: B 1, A 2, C 3 (missing)
#   mean rank: A (2+2+2+2)/4 = 2.00, B (3+3+3+1)/4 = 2.50, C (1+1+1+3)/4 = 1.50
#   final: C 1st, A 2nd, B 3rd → [A, B, C] = [2, 3, 1]
# Aggregate-then-rank: means A 0.575, B 0.660, C 0.600 → B 1st, C 2nd, A 3rd → [3, 1, 2]
FIXTURE = np.array([
    [0.60, 0.62, 0.58, 0.50],
    [0.55, 0.57, 0.56, 0.96],
    [0.80, 0.82, 0.78, NAN],
])


def test_fixture_schemes_disagree_as_in_the_facts():
    rta = rank_then_aggregate({"dsc": FIXTURE}, DSC)
    atr = aggregate_then_rank({"dsc": FIXTURE}, DSC)
    assert rta.rank.tolist() == [2, 3, 1]
    assert rta.score.tolist() == pytest.approx([2.0, 2.5, 1.5])
    assert atr.rank.tolist() == [3, 1, 2]
    assert atr.detail["dsc"].tolist() == pytest.approx([0.575, 0.66, 0.60])
    assert rank_entries({"dsc": FIXTURE}, scheme="aggregate_then_rank", metrics=DSC).rank.tolist() == [3, 1, 2]
    assert rank_entries({"dsc": FIXTURE}, metrics=DSC).rank.tolist() == [2, 3, 1]


def test_rank_min_ties_share_lowest_rank_and_missing_is_worst():
    x = np.array([0.9, 0.5, 0.9, NAN, 0.1, NAN])
    # 0.9, 0.9 → 1, 1; 0.5 → 3; 0.1 → 4; both missing → 5 (after every value)
    assert rank_min(x, higher_is_better=True).tolist() == [1, 3, 1, 5, 4, 5]
    # runtime: lower is better; a missing runtime still ranks last
    t = np.array([3.0, 1.0, NAN, 1.0])
    assert rank_min(t, higher_is_better=False).tolist() == [3, 1, 4, 1]


def test_missing_case_ranks_below_a_real_zero():
    # a failed case must rank below an entry that ran and scored 0
    x = np.array([[0.0], [NAN]])
    assert rank_min(x, higher_is_better=True)[:, 0].tolist() == [1, 2]


def test_multi_metric_rank_then_aggregate_by_hand():
    # two entries, two cases; DSC: e0 better on both; NSD: e1 better on case 1; runtime: e1 faster on both
    values = {"dsc": np.array([[0.9, 0.8], [0.7, 0.6]]),
              "nsd": np.array([[0.5, 0.9], [0.6, 0.1]]),
              "runtime_s": np.array([[10.0, 10.0], [5.0, 5.0]])}
    r = rank_then_aggregate(values, DEFAULT_METRICS)
    # e0 ranks: dsc 1,1  nsd 2,1  rt 2,2 → 9/6 = 1.5 ; e1: dsc 2,2  nsd 1,2  rt 1,1 → 9/6 = 1.5 → tie
    assert r.score.tolist() == pytest.approx([1.5, 1.5])
    assert r.rank.tolist() == [1, 1]
    atr = aggregate_then_rank({**values, "runtime_s": np.array([[10.0, NAN], [5.0, 5.0]])},
                              (DEFAULT_METRICS[0], DEFAULT_METRICS[1], Metric("runtime_s", False, 60.0)))
    # means: dsc .85/.65, nsd .7/.35, runtime (10+60)/2=35 vs 5 → ranks e0: 1,1,2 (4/3); e1: 2,2,1 (5/3)
    assert atr.rank.tolist() == [1, 2]


def test_scheme_names():
    assert "Rank-then-aggregate" in scheme_label("rank_then_aggregate")
    with pytest.raises(ValueError, match="unknown ranking scheme"):
        scheme_label("vibes")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=2, max_size=12))
def test_rank_min_matches_scipy_min_ranks(xs):
    from scipy.stats import rankdata

    x = np.array(xs)
    assert rank_min(x, higher_is_better=True).tolist() == rankdata(-x, method="min").tolist()
    assert rank_min(x, higher_is_better=False).tolist() == rankdata(x, method="min").tolist()


def test_bootstrap_stability_of_a_dominant_order_is_one():
    rng = np.random.default_rng(1)
    base = np.linspace(0.9, 0.5, 5)[:, None]
    dsc = base + rng.uniform(0, 0.01, size=(5, 40))  # gaps 0.1 ≫ noise: every resample keeps the order
    st_ = bootstrap_stability({"dsc": dsc}, metrics=DSC, n_boot=200)
    assert st_.full_rank.tolist() == [1, 2, 3, 4, 5]
    assert st_.tau_mean == pytest.approx(1.0)
    assert st_.rank_counts[0, 0] == 200
    d = st_.to_dict(["a", "b", "c", "d", "e"])
    assert d["entries"][2]["rank_freq"][2] == 1.0


def test_bootstrap_stability_of_noise_is_low():
    rng = np.random.default_rng(2)
    dsc = rng.uniform(0, 1, size=(6, 30))
    for scheme in ("rank_then_aggregate", "aggregate_then_rank"):
        st_ = bootstrap_stability({"dsc": dsc}, metrics=DSC, scheme=scheme, n_boot=300, seed=3)
        assert st_.taus.shape == (300,)
        assert st_.tau_mean < 0.8
        assert st_.rank_counts.sum(axis=1).tolist() == [300] * 6


def test_kendall_tau_values():
    assert kendall_tau(np.array([1, 2, 3]), np.array([1, 2, 3])) == pytest.approx(1.0)
    assert kendall_tau(np.array([1, 2, 3]), np.array([3, 2, 1])) == pytest.approx(-1.0)


def test_holm_by_hand():
    # p sorted 0.01, 0.02, 0.04 with m=3: 0.03, 0.04, 0.04 (monotone), then capped at 1
    p = np.array([0.04, 0.01, 0.02, NAN])
    assert holm(p)[:3].tolist() == pytest.approx([0.04, 0.03, 0.04])
    assert np.isnan(holm(p)[3])
    # 0.5·2 = 1.0, then 0.9·1 = 0.9 raised to 1.0 by monotonicity
    assert holm(np.array([0.5, 0.9])).tolist() == pytest.approx([1.0, 1.0])


def test_significance_map_finds_only_real_differences():
    rng = np.random.default_rng(4)
    good = rng.uniform(0.8, 0.9, 25)
    values = {"dsc": np.stack([good, good - 0.2, good - 0.2 + rng.normal(0, 0.001, 25)])}
    sm = significance_map(values, metric=DEFAULT_METRICS[0])
    assert sm.significant[0, 1] and sm.significant[0, 2]
    assert not sm.significant[1, 0] and not sm.significant[2, 0]
    assert not sm.significant[1, 2] or not sm.significant[2, 1]
    assert not sm.significant[1, 1]
    # Holm only ever raises p
    off = ~np.eye(3, dtype=bool)
    assert np.all(sm.adjusted[off] >= sm.pvalues[off] - 1e-12)
    assert sm.to_dict(["a", "b", "c"])["significant"][0][1] is True


def test_significance_identical_entries_not_significant():
    x = np.full((2, 10), 0.5)
    sm = significance_map({"dsc": x})
    assert sm.pvalues[0, 1] == 1.0 and not sm.significant.any()


def test_runtime_significance_direction():
    t = np.stack([np.linspace(1, 2, 20), np.linspace(5, 6, 20)])
    sm = significance_map({"runtime_s": t}, metric=DEFAULT_METRICS[2])
    assert sm.significant[0, 1] and not sm.significant[1, 0]


# ------------------------------------------------------------------ reproducibility


def _scores(dsc, nsd, rt):
    return {f"c{i}": (d, s, t) for i, (d, s, t) in enumerate(zip(dsc, nsd, rt))}


def test_reproduction_within_margin_is_reproduced():
    rng = np.random.default_rng(5)
    d = rng.uniform(0.7, 0.9, 30)
    s = rng.uniform(0.7, 0.9, 30)
    t = rng.uniform(1, 2, 30)
    orig = _scores(d, s, t)
    rep = _scores(d + rng.normal(0, 0.002, 30), s + rng.normal(0, 0.002, 30), 2 * t)
    r = compare(orig, rep, time_limit_s=60)
    assert r.verdict == REPRODUCED
    assert r.runtime_ratio == pytest.approx(2.0)
    assert abs(r.delta_dsc.mean) < 0.002
    assert r.delta_dsc.low <= r.delta_dsc.mean <= r.delta_dsc.high
    assert len(r.cases) == 30 and r.cases[0]["delta_dsc"] == pytest.approx(rep["c0"][0] - orig["c0"][0])


def test_reproduction_off_by_two_points_is_not_reproduced():
    d = np.full(20, 0.8)
    orig = _scores(d, d, np.ones(20))
    rep = _scores(d - 0.02, d, np.ones(20))
    r = compare(orig, rep, time_limit_s=60)
    assert r.verdict == NOT_REPRODUCED
    assert r.delta_dsc.mean == pytest.approx(-0.02)
    # a wider margin accepts it
    assert compare(orig, rep, time_limit_s=60, margin_dsc=0.03).verdict == REPRODUCED


def test_missing_reproduction_case_counts_as_failed():
    d = np.full(10, 0.8)
    orig = _scores(d, d, np.ones(10))
    rep = dict(_scores(d, d, np.ones(10)))
    del rep["c3"]
    r = compare(orig, rep, time_limit_s=60)
    row = next(c for c in r.cases if c["case_id"] == "c3")
    assert row["dsc_repro"] == 0.0 and row["runtime_repro"] == 60.0 and not row["ok_repro"]
    assert r.delta_dsc.mean == pytest.approx(-0.08)
    assert r.verdict == NOT_REPRODUCED
    assert any("c3" in n for n in r.notes)


def test_bootstrap_mean_ci_covers_the_mean():
    x = np.random.default_rng(6).normal(1.0, 0.1, 200)
    ci = bootstrap_mean_ci(x)
    assert ci.low < x.mean() < ci.high
    # percentile interval width ≈ 2·1.96·σ/√n
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * x.std() / np.sqrt(200), rel=0.2)


def test_vectorized_kendall_matches_scipy():
    from scipy.stats import kendalltau

    from evaluator.ranking import _kendall_many

    rng = np.random.default_rng(7)
    ref = np.array([1, 2, 2, 4, 5, 6])
    ranks = rng.integers(1, 7, size=(6, 50))
    got = _kendall_many(ref, ranks)
    want = [kendalltau(ref, ranks[:, b]).statistic for b in range(50)]
    assert got == pytest.approx(want)


def test_significance_vectorized_matches_pairwise_scipy():
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(8)
    a = rng.uniform(0, 1, (4, 15))
    a[1, :3] = a[2, :3]  # some zero differences
    sm = significance_map({"dsc": a})
    for i in range(4):
        for j in range(4):
            if i != j:
                want = wilcoxon(a[i], a[j], alternative="greater", zero_method="wilcox").pvalue
                assert sm.pvalues[i, j] == pytest.approx(want)
