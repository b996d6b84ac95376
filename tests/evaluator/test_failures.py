"""evaluator.failures.charge_failures: THE failed-case rule (DSC 0, NSD 0, runtime = the run's case time limit),
and the aggregates built on it (stored run totals, the evaluator report, the reproducibility comparison)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from evaluator import aggregate
from evaluator.failures import charge_failures
from evaluator.reproducibility import compare
from evaluator.runs import summarize


def test_failed_cases_are_charged_and_ok_cases_are_untouched():
    dsc, nsd, rt = np.array([0.9, 0.7, np.nan]), np.array([0.8, 0.6, 0.5]), np.array([3.0, 100.0, 1.0])
    c = charge_failures(dsc, nsd, rt, [True, False, True], 60.0)
    assert c.dsc.tolist()[:2] == [0.9, 0.0] and np.isnan(c.dsc[2])  # an ok case's NaN is the caller's business
    assert c.nsd.tolist() == [0.8, 0.0, 0.5]
    assert c.runtime_s.tolist() == [3.0, 60.0, 1.0]  # the failed case ran 100 s (a late kill): charged 60
    assert rt.tolist() == [3.0, 100.0, 1.0] and dsc[1] == 0.7  # inputs unchanged


def test_per_case_and_per_entry_limits_broadcast():
    ok = np.array([[True, False], [False, False]])
    c = charge_failures(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2)), ok, np.array([[60.0], [10.0]]))
    assert c.runtime_s.tolist() == [[1.0, 60.0], [10.0, 10.0]]
    assert c.dsc.tolist() == [[1.0, 0.0], [0.0, 0.0]]
    c = charge_failures([1, 1], [1, 1], [1, 1], [False, False], [5.0, 7.0])
    assert c.runtime_s.tolist() == [5.0, 7.0]


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        charge_failures([1, 2], [1], [1, 2], [True, True], 60)


def _case(status, dsc, nsd, rt, mod="CT", size="small"):
    return SimpleNamespace(status=status, dsc=dsc, nsd=nsd, runtime_s=rt, modality=mod, size_class=size)


def test_stored_run_totals_charge_the_run_limit():
    # a failed row whose stored values are not the charged ones (recorded before the rule, or by an old worker)
    cases = [_case("ok", 0.8, 0.6, 2.0), _case("timeout", 0.3, 0.2, 75.0, mod="US")]
    out = summarize(cases, time_limit_s=60.0)
    assert out["dsc"] == pytest.approx(0.4) and out["nsd"] == pytest.approx(0.3)
    assert out["runtime_s"] == pytest.approx(31.0) and out["total_runtime_s"] == pytest.approx(62.0)
    assert out["by_modality"]["US"] == {"n": 1, "dsc": 0.0, "nsd": 0.0, "runtime_s": 60.0}
    assert out["ok"] == 1 and out["failed"] == 1


def test_report_and_reproducibility_use_the_same_rule():
    df = pd.DataFrame({"case": ["a", "b"], "modality": ["CT", "CT"], "dsc": [0.8, 0.9], "nsd": [0.6, 0.9],
                       "runtime_s": [2.0, np.nan], "status": ["ok", "timeout"]})
    norm = aggregate.normalize(df, time_limit_s=30.0)
    assert norm["dsc"].tolist() == [0.8, 0.0] and norm["runtime_s"].tolist() == [2.0, 30.0]
    # the original ran under 30 s, the reproduction under 90 s: each side is charged its own run's limit
    res = compare({"a": (0.8, 0.6, 2.0), "b": (0.5, 0.5, 3.0)}, {"a": (0.8, 0.6, 2.0)},
                  time_limit_s=(30.0, 90.0), n_boot=50)
    b = next(c for c in res.cases if c["case_id"] == "b")
    assert (b["dsc_repro"], b["nsd_repro"], b["runtime_repro"]) == (0.0, 0.0, 90.0)
    assert res.runtime_ratio == pytest.approx((2.0 + 90.0) / (2.0 + 3.0))
