"""Undefined scores (cvpr24: a label of 1..max(gt) absent from both masks) in the ranking schemes and the stored
run totals: left out of per-case ranks and means, never a failure, never 0 (docs/interactive.md)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from evaluator.ranking import DEFAULT_METRICS, Metric, bootstrap_stability, rank_cases, rank_entries
from evaluator.runs import summarize

DSC = (Metric("dsc", True, 0.0, "DSC"),)


def test_undefined_cell_takes_no_rank_and_does_not_push_the_others() -> None:
    # case 0: entry 0 undefined (stored NaN), entries 1 and 2 defined; case 1: all defined
    values = {"dsc": np.array([[np.nan, 0.9], [0.5, 0.8], [0.4, 0.7]])}
    undefined = {"dsc": np.array([[True, False], [False, False], [False, False]])}
    ranks = rank_cases(values, DSC, undefined=undefined)[0]
    assert np.isnan(ranks[0, 0]) and ranks[1, 0] == 1 and ranks[2, 0] == 2  # entry 1 is first, not second
    res = rank_entries(values, metrics=DSC, undefined=undefined)
    assert res.score.tolist() == [1.0, 1.5, 2.5]  # entry 0: its one defined rank; as a failure it would be 2.0
    assert res.rank.tolist() == [1, 2, 3]
    # without the mask the NaN is a missing case: the worst rank (what a failure gets)
    assert rank_entries(values, metrics=DSC).score.tolist() == [2.0, 1.5, 2.5]


def test_aggregate_then_rank_means_skip_undefined_cells() -> None:
    values = {"dsc": np.array([[np.nan, 0.9], [0.5, 0.8]])}
    undefined = {"dsc": np.array([[True, False], [False, False]])}
    res = rank_entries(values, scheme="aggregate_then_rank", metrics=DSC, undefined=undefined)
    assert res.detail["dsc"].tolist() == [0.9, pytest.approx(0.65)]  # pandas' mean; a failure would be 0.45
    assert res.rank.tolist() == [1, 2]


def test_bootstrap_full_ranking_agrees_with_the_ranking() -> None:
    rng = np.random.default_rng(3)
    vals = {m.name: rng.random((4, 6)) for m in DEFAULT_METRICS}
    undefined = {"dsc": np.zeros((4, 6), dtype=bool)}
    undefined["dsc"][0, :3] = True
    vals["dsc"][undefined["dsc"]] = np.nan
    for scheme in ("rank_then_aggregate", "aggregate_then_rank"):
        st = bootstrap_stability(vals, scheme=scheme, n_boot=20, undefined=undefined)
        assert st.full_rank.tolist() == rank_entries(vals, scheme=scheme, undefined=undefined).rank.tolist()
        assert np.isfinite(st.taus).all()


def test_run_totals_skip_undefined_but_charge_failures() -> None:
    case = lambda status, dsc: SimpleNamespace(status=status, dsc=dsc, nsd=0.5, runtime_s=1.0, modality="CT",  # noqa: E731
                                               size_class="")
    out = summarize([case("ok", None), case("ok", 0.8), case("timeout", None)], time_limit_s=60.0)
    assert out["dsc"] == pytest.approx(0.4)  # (0.8 + 0 for the failure) / 2: the undefined case is left out
    assert out["nsd"] == pytest.approx(1.0 / 3) and out["runtime_s"] == pytest.approx(62.0 / 3)
    only = summarize([case("ok", None)], time_limit_s=60.0)
    assert only["dsc"] is None and only["n"] == 1
