"""Aggregation (per modality, overall; failures score 0) and the ``score`` command."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import evaluator
from evaluator import aggregate
from evaluator.cli import app


def _rows():
    return pd.DataFrame(
        [
            {"case": "3DBox_CT_0001.npz", "dsc": 0.9, "nsd": 0.8, "runtime_s": 10.0, "status": "ok"},
            {"case": "3DBox_CT_0002.npz", "dsc": 0.7, "nsd": 0.6, "runtime_s": 20.0, "status": "ok"},
            {"case": "3DBox_CT_0003.npz", "dsc": 0.95, "nsd": 0.9, "runtime_s": 30.0, "status": "timeout"},
            {"case": "2DBox_US_0001.npz", "dsc": 0.5, "nsd": 0.4, "runtime_s": 1.0, "status": "ok"},
        ]
    )


def test_failed_and_missing_cases_score_zero():
    df = aggregate.complete(_rows(), expected_cases=["2DBox_US_0002.npz"])
    assert list(df["modality"]) == ["CT", "CT", "CT", "US", "US"]
    per = aggregate.by_modality(df, time_limit_s=60.0).set_index("modality")
    assert per.loc["CT", "dsc_mean"] == pytest.approx((0.9 + 0.7 + 0.0) / 3)
    assert per.loc["CT", "dsc_median"] == pytest.approx(0.7)
    assert per.loc["CT", "nsd_mean"] == pytest.approx((0.8 + 0.6) / 3)
    assert per.loc["CT", "runtime_s_mean"] == pytest.approx((10 + 20 + 60) / 3)
    assert per.loc["CT", "n_failed"] == 1
    assert per.loc["US", "dsc_mean"] == pytest.approx(0.25) and per.loc["US", "n_failed"] == 1
    tot = aggregate.overall(df)
    assert tot["dsc_mean"] == pytest.approx((0.9 + 0.7 + 0.5) / 5) and tot["n_cases"] == 5
    assert tot["dsc_median"] == pytest.approx(0.5)
    mm = aggregate.overall(df, per_modality_first=True)
    assert mm["dsc_mean"] == pytest.approx(((0.9 + 0.7) / 3 + 0.25) / 2)
    s = aggregate.summary(df)
    assert list(s["modality"]) == ["CT", "US", "overall"]


def test_manifest_modality_overrides_name_and_nan_cases_are_left_out():
    df = _rows()
    df.loc[3, "dsc"] = np.nan  # a successful case whose classes were all skipped
    df = aggregate.complete(df, manifest={"3DBox_CT_0001.npz": "MR"})
    per = aggregate.by_modality(df).set_index("modality")
    assert per.loc["MR", "n_cases"] == 1 and per.loc["CT", "n_cases"] == 2
    assert math.isnan(per.loc["US", "dsc_mean"])
    with pytest.raises(ValueError, match="miss the column"):
        aggregate.by_modality(pd.DataFrame({"case": ["a"]}))


def _write_case(gt_dir, pred_dir, name, gts, segs=None, **extra):
    np.savez_compressed(gt_dir / name, gts=gts, **extra)
    if segs is not None:
        np.savez_compressed(pred_dir / name, segs=segs)


def test_score_command_table_and_csv(tmp_path):
    gt_dir, pred_dir = tmp_path / "gts", tmp_path / "segs"
    gt_dir.mkdir()
    pred_dir.mkdir()
    g3 = np.zeros((8, 20, 20), np.uint8)
    g3[2:6, 3:10, 3:10] = 1
    g3[2:6, 12:18, 12:18] = 2
    p3 = np.roll(g3, 1, axis=2)
    _write_case(gt_dir, pred_dir, "3DBox_CT_0001.npz", g3, p3, spacing=np.array([0.8, 0.8, 2.5]), boxes=np.zeros((3, 6)))
    g2 = np.zeros((30, 30), np.uint8)
    g2[5:20, 5:20] = 1
    _write_case(gt_dir, pred_dir, "2DBox_US_0001.npz", g2, g2[:29])  # wrong shape
    _write_case(gt_dir, pred_dir, "2DBox_US_0002.npz", g2)  # no output
    _write_case(gt_dir, pred_dir, "2DBox_US_0003.npz", g2, g2)
    out = tmp_path / "res" / "results.csv"
    r = CliRunner().invoke(app, ["score", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "default@1" in r.output and "CT" in r.output and "overall" in r.output
    df = pd.read_csv(out)
    cases = df[df.level == "case"].set_index("case")
    assert cases.loc["2DBox_US_0001.npz", "status"] == "invalid_output"
    assert "spatial shape is (30, 30)" in cases.loc["2DBox_US_0001.npz", "message"]
    assert cases.loc["2DBox_US_0002.npz", "status"] == "missing"
    assert cases.loc["2DBox_US_0002.npz", "dsc"] == 0.0
    assert cases.loc["2DBox_US_0003.npz", "dsc"] == 1.0
    classes = df[(df.level == "class") & (df.case == "3DBox_CT_0001.npz")].set_index("label")
    assert list(classes.index) == [1, 2, 3]  # three boxes prompted: label 3 absent from both
    assert classes.loc[3, "skipped"] and math.isnan(classes.loc[3, "dsc"])
    expected = evaluator.score_case(g3, p3, spacing=(2.5, 0.8, 0.8), labels=[1, 2, 3])
    assert cases.loc["3DBox_CT_0001.npz", "nsd"] == pytest.approx(expected.nsd, abs=1e-12)
    assert classes.loc[1, "dsc"] == pytest.approx(expected.per_class[1].dsc, abs=1e-12)


def test_score_command_cvpr24_and_errors(tmp_path):
    gt_dir, pred_dir = tmp_path / "gts", tmp_path / "segs"
    gt_dir.mkdir()
    pred_dir.mkdir()
    g2 = np.zeros((30, 30), np.uint8)
    g2[5:20, 5:20] = 1
    _write_case(gt_dir, pred_dir, "2DBox_US_0001.npz", g2, np.roll(g2, 2, axis=0))
    runner = CliRunner()
    r = runner.invoke(app, ["score", "--pred", str(pred_dir), "--gt", str(gt_dir), "--profile", "cvpr24"])
    assert r.exit_code == 0 and "cvpr24@1" in r.output
    for args, msg in [
        (["--pred", str(tmp_path / "nope"), "--gt", str(gt_dir)], "is not a folder"),
        (["--pred", str(pred_dir), "--gt", str(pred_dir / "x")], "is not a folder"),
        (["--pred", str(pred_dir), "--gt", str(gt_dir), "--profile", "nsd9"], "unknown metric profile"),
        (["--pred", str(pred_dir), "--gt", str(tmp_path)], "no ground-truth files"),
    ]:
        r = runner.invoke(app, ["score", *args])
        assert r.exit_code == 2, r.output
        assert msg in r.output and "Traceback" not in r.output
        assert len([ln for ln in r.output.splitlines() if ln.strip()]) == 1
    (gt_dir / "2DBox_US_0009.npz").write_bytes(b"not a zip")
    r = runner.invoke(app, ["score", "--pred", str(pred_dir), "--gt", str(gt_dir)])
    assert r.exit_code == 2 and "2DBox_US_0009.npz" in r.output
