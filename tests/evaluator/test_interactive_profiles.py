"""Profiles cvpr24 / cvpr25 outside the scoring function: float and negative ``segs`` scored as the references did
(``seg == i`` per class) instead of refused; labels absent from both masks undefined (NaN), not 0."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from evaluator import get_profile, score_case
from evaluator.io import CaseFormatError, load_prediction
from evaluator.scoring import reference_values


def _case() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((6, 10, 10), np.uint8)
    gt[1:5, 1:5, 1:5] = 1  # 64 voxels
    gt[1:5, 6:9, 6:9] = 2  # 36 voxels
    return gt, gt.astype(np.float32)


def test_float_segs_scored_like_the_reference() -> None:
    gt, f = _case()
    assert score_case(gt, f, spacing=(1, 1, 1), profile="cvpr24").dsc == 1.0
    g = f.copy()
    g[1:5, 1:5, 1:3] = 0.9  # 32 voxels of class 1 written as 0.9: equal to no class (the reference: seg == 1 False)
    s = score_case(gt, g, spacing=(1, 1, 1), profile="cvpr24")
    # class 1: 2*32/(64+32) = 2/3; class 2: 1 -> mean 5/6, rounded to 4 decimals as the reference
    assert s.per_class[1].dsc == 2 / 3 and s.dsc == round(5 / 6, 4)
    assert score_case(gt, g, spacing=(1, 1, 1), profile="cvpr25").dsc == (2 / 3 + 1.0) / 2
    with pytest.raises(ValueError, match="integer label map"):
        score_case(gt, g, spacing=(1, 1, 1), profile="default")


def test_negative_and_non_finite_values_match_no_class() -> None:
    gt, _ = _case()
    neg = gt.astype(np.int16)
    neg[1:5, 6:9, 6:9] = -2  # class 2 written as -2
    s = score_case(gt, neg, spacing=(1, 1, 1), profile="cvpr24")
    assert s.per_class[2].dsc == 0.0 and s.per_class[1].dsc == 1.0
    f = gt.astype(np.float64)
    f[0, 0, 0] = np.nan
    f[0, 0, 1] = np.inf
    f[0, 0, 2] = 1e300
    assert reference_values(f)[0, 0, :3].tolist() == [-1, -1, -1]
    assert score_case(gt, f, spacing=(1, 1, 1), profile="cvpr24").dsc == 1.0


def test_load_prediction_accepts_float_and_negative_only_under_reference_profiles(tmp_path: Path) -> None:
    path = tmp_path / "out.npz"
    np.savez_compressed(path, segs=np.full((4, 5, 6), 0.9744, np.float32))
    with pytest.raises(CaseFormatError, match="dtype"):
        load_prediction(path, expected_shape=(4, 5, 6))
    for prof in ("cvpr24", "cvpr25@1"):
        assert load_prediction(path, expected_shape=(4, 5, 6), profile=prof).dtype == np.float32
    np.savez_compressed(path, segs=np.full((4, 5, 6), -1, np.int8))
    with pytest.raises(CaseFormatError, match="negative"):
        load_prediction(path, expected_shape=(4, 5, 6), profile="default")
    assert int(load_prediction(path, expected_shape=(4, 5, 6), profile="cvpr24").min()) == -1
    with pytest.raises(CaseFormatError, match="shape"):  # everything else is still checked
        load_prediction(path, expected_shape=(4, 5, 7), profile="cvpr24")


def test_absent_label_is_undefined_not_zero_under_cvpr24() -> None:
    gt = np.zeros((8, 8), np.uint8)
    gt[1:4, 1:4] = 1
    gt[5:7, 5:7] = 3  # label 2 absent from the ground truth
    s = score_case(gt, gt, spacing=(1, 1), profile="cvpr24")
    assert math.isnan(s.dsc) and math.isnan(s.per_class[2].dsc)
    assert s.to_dict()["dsc"] is None
    assert any("undefined" in n and "[2]" in n for n in s.notes)
    assert s.undefined
    # the prediction writing label 2 somewhere makes it defined (DSC 0 for that class), as the reference
    p = gt.copy()
    p[0, 7] = 2
    d = score_case(gt, p, spacing=(1, 1), profile="cvpr24")
    assert not math.isnan(d.dsc) and not d.undefined
    # default never has it: label 2 is not a prompted class of the ground truth
    assert not math.isnan(score_case(gt, gt, spacing=(1, 1)).dsc)
    assert "undefined" in get_profile("cvpr24").description
