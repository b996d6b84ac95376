"""score_case under the ``default`` and ``cvpr24`` profiles.

``cvpr24`` is checked against a transcription of the 2024 reference script
(bowang-lab/MedSAM, LiteMedSAM branch, evaluation/compute_metrics.py:
compute_multi_class_dsc / compute_multi_class_nsd and its main loop) run on
DeepMind's surface-distance package, with NumPy 1's behaviour where NumPy 2 crashes.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evaluator
from evaluator.io import Spacing
from evaluator.scoring import label_stats

import surface_distance as sd


# ---------------------------------------------------------------- reference transcription


def _ref_dice(g, s):
    vs = g.sum() + s.sum()
    if vs == 0:
        return np.nan  # np.NaN on NumPy 1; surface-distance crashes on NumPy 2
    return 2 * (g & s).sum() / vs


def _ref_nsd_one(g, s, spacing, tol):
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", DeprecationWarning)
        if not g.any() or not s.any():
            # the reference (fixed on GitHub, or NumPy 1) gives 0 here; NumPy 2 crashes
            return 0.0 if (g.any() or s.any()) else np.nan
        d = sd.compute_surface_distances(g, s, spacing)
        return sd.compute_surface_dice_at_tolerance(d, tol)


def reference_compute_metrics(gts, segs, name, stored_spacing=None):
    """(dsc, nsd) exactly as compute_metrics.py stores them (rounded to 4 decimals)."""
    dscs = [_ref_dice(gts == i, segs == i) for i in range(1, gts.max() + 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # np.mean([]) on an empty gt
        dsc = np.mean(dscs)
    if dsc > 0.2:
        if name.startswith("3D"):
            g3, s3, spacing = gts, segs, stored_spacing
        else:
            g3, s3, spacing = np.expand_dims(gts, -1), np.expand_dims(segs, -1), [1.0, 1.0, 1.0]
        nsd = np.mean([_ref_nsd_one(g3 == i, s3 == i, spacing, 2.0) for i in range(1, gts.max() + 1)])
    else:
        nsd = 0.0
    return np.round(dsc, 4), np.round(nsd, 4)


# ---------------------------------------------------------------- helpers


def _label_map(rng, shape, n_labels):
    out = np.zeros(shape, np.uint8)
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    for lab in range(1, n_labels + 1):
        c = [rng.uniform(0, n) for n in shape]
        r = [rng.uniform(1, max(2, n / 2)) for n in shape]
        out[sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grids, c, r)) <= 1] = lab
    return out


def _perturb(rng, gt):
    pred = gt.copy()
    op = rng.integers(0, 4)
    if op == 0:
        pred = np.roll(pred, int(rng.integers(-3, 4)), axis=int(rng.integers(0, gt.ndim)))
    elif op == 1:
        pred[rng.random(gt.shape) < 0.1] = 0
    elif op == 2:
        lab = int(rng.integers(1, max(2, gt.max() + 1)))
        pred[pred == lab] = 0  # drop a class
    else:
        pred = _label_map(rng, gt.shape, int(rng.integers(0, 4)))
    return pred


# ---------------------------------------------------------------- cvpr24


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.sampled_from([2, 3]))
def test_cvpr24_reproduces_reference_script(seed, nd):
    rng = np.random.default_rng(seed)
    shape = tuple(int(rng.integers(4, 24 if nd == 2 else 14)) for _ in range(nd))
    gt = _label_map(rng, shape, int(rng.integers(0, 4)))
    pred = _perturb(rng, gt)
    if nd == 3:
        stored = [float(rng.choice([0.8, 1.0, 2.5, rng.uniform(0.5, 3)])) for _ in range(3)]
        spacing = Spacing(stored[::-1], stored)
        name = "3DBox_CT_0001.npz"
    else:
        stored, spacing, name = None, (1.0, 1.0), "2DBox_US_0001.npz"
    ref_dsc, ref_nsd = reference_compute_metrics(gt, pred, name, stored)
    got = evaluator.score_case(gt, pred, spacing=spacing, profile="cvpr24")
    assert got.profile == "cvpr24@1"
    if math.isnan(ref_dsc):
        assert math.isnan(got.dsc)
    else:
        assert got.dsc == ref_dsc
    assert got.nsd == ref_nsd


def test_cvpr24_quirks_2d_disk_shifted_3px():
    yy, xx = np.mgrid[:200, :200]
    gt = (((yy - 100.5) ** 2 + (xx - 100.5) ** 2) < 50**2).astype(np.uint8)  # 100-px disk
    pred = (((yy - 100.5) ** 2 + (xx - 103.5) ** 2) < 50**2).astype(np.uint8)
    default = evaluator.score_case(gt, pred, spacing=(1.0, 1.0), labels=[1])
    cvpr = evaluator.score_case(gt, pred, spacing=(1.0, 1.0), profile="cvpr24")
    assert round(default.dsc, 3) == 0.962 and cvpr.dsc == round(default.dsc, 4)
    assert default.nsd == pytest.approx(0.594, abs=5e-4)  # a true 2D contour
    assert cvpr.nsd == pytest.approx(0.995, abs=5e-4)  # (H, W, 1) volume: mostly area overlap
    assert default.profile == "default@1"


def test_cvpr24_nan_for_label_absent_from_both_and_no_nsd_below_dsc_02():
    gt = np.zeros((20, 20), np.uint8)
    gt[2:8, 2:8] = 1
    gt[12:18, 12:18] = 3  # label 2 absent from both masks
    s = evaluator.score_case(gt, gt.copy(), spacing=(1, 1), profile="cvpr24")
    assert math.isnan(s.dsc) and math.isnan(s.per_class[2].dsc)
    assert s.nsd == 0.0  # NaN > 0.2 is False in the reference
    # default: the absent class is skipped, the case is perfect
    d = evaluator.score_case(gt, gt.copy(), spacing=(1, 1), labels=[1, 2, 3])
    assert d.dsc == 1.0 and d.nsd == 1.0 and d.per_class[2].skipped
    # poor overlap: NSD not computed at all
    gt[gt == 3] = 0
    pred = np.zeros_like(gt)
    pred[6:10, 6:10] = 1  # overlaps 4 of 36 voxels: DSC 0.154
    s = evaluator.score_case(gt, pred, spacing=(1, 1), profile="cvpr24")
    assert s.dsc == 0.1538 and s.nsd == 0.0
    assert evaluator.score_case(gt, pred, spacing=(1, 1), labels=[1]).nsd > 0.0


def test_cvpr24_uses_spacing_as_stored():
    rng = np.random.default_rng(5)
    gt = _label_map(rng, (10, 30, 30), 2)
    pred = np.roll(gt, 1, axis=2)
    stored = [0.8, 0.8, 2.5]  # (x, y, z) as the 2024 files
    sp = Spacing(stored[::-1], stored)
    expected = reference_compute_metrics(gt, pred, "3DBox_CT_0001.npz", stored)
    assert evaluator.score_case(gt, pred, spacing=sp, profile="cvpr24").nsd == expected[1]
    assert evaluator.score_case(gt, pred, spacing=(2.5, 0.8, 0.8), stored_spacing=stored, profile="cvpr24").nsd == expected[1]
    # the default profile uses array-axis order, so it differs here
    d = evaluator.score_case(gt, pred, spacing=sp, labels=[1, 2])
    per = [evaluator.nsd(gt == c, pred == c, (2.5, 0.8, 0.8), 2.0) for c in (1, 2)]
    assert d.nsd == pytest.approx(np.mean(per), abs=1e-15)


# ---------------------------------------------------------------- default


def test_default_empty_mask_rules():
    gt = np.zeros((16, 16, 8), np.uint8)
    pred = np.zeros_like(gt)
    gt[2:6, 2:6, 2:5] = 1  # 1: gt only
    pred[9:13, 9:13, 2:5] = 2  # 2: pred only
    gt[2:6, 9:13, 2:5] = 3  # 3: both
    pred[2:6, 9:13, 2:5] = 3
    s = evaluator.score_case(gt, pred, spacing=(1.0, 1.0, 2.0), labels=[1, 2, 3, 4])
    assert (s.per_class[1].dsc, s.per_class[1].nsd) == (0.0, 0.0)
    assert (s.per_class[2].dsc, s.per_class[2].nsd) == (0.0, 0.0)
    assert (s.per_class[3].dsc, s.per_class[3].nsd) == (1.0, 1.0)
    assert s.per_class[4].skipped and math.isnan(s.per_class[4].nsd)  # absent from both
    assert s.dsc == pytest.approx(1 / 3) and s.nsd == pytest.approx(1 / 3)
    # a class present only in pred and not asked for is ignored
    s = evaluator.score_case(gt, pred, spacing=(1.0, 1.0, 2.0), labels=[3])
    assert s.dsc == 1.0 and list(s.per_class) == [3]
    # labels=None: the nonzero labels of the ground truth
    s = evaluator.score_case(gt, pred, spacing=(1.0, 1.0, 2.0))
    assert sorted(s.per_class) == [1, 3]
    # nothing to score at all
    e = evaluator.score_case(np.zeros_like(gt), np.zeros_like(gt), spacing=(1, 1, 1), labels=[1])
    assert math.isnan(e.dsc) and math.isnan(e.nsd)
    assert json.loads(json.dumps(e.to_dict()))["dsc"] is None


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.sampled_from([2, 3]))
def test_default_per_class_equals_mask_metrics(seed, nd):
    rng = np.random.default_rng(seed)
    shape = tuple(int(rng.integers(3, 30 if nd == 2 else 14)) for _ in range(nd))
    gt = _label_map(rng, shape, int(rng.integers(1, 5)))
    pred = _perturb(rng, gt)
    spacing = tuple(float(rng.uniform(0.4, 2.5)) for _ in range(nd))
    labels = list(range(1, 5))
    s = evaluator.score_case(gt, pred, spacing=spacing, labels=labels)
    for c in labels:
        g, p = gt == c, pred == c
        cs = s.per_class[c]
        if not g.any() and not p.any():
            assert cs.skipped
        else:
            assert cs.dsc == evaluator.dice(g, p)
            ref = _ref_nsd_one(g, p, list(spacing), 2.0)
            assert abs(cs.nsd - ref) <= 1e-9
            assert (cs.gt_voxels, cs.pred_voxels) == (int(g.sum()), int(p.sum()))


def test_label_stats_single_pass_matches_brute_force(monkeypatch):
    import evaluator.scoring as scoring

    monkeypatch.setattr(scoring, "_CHUNK", 300)  # many slabs
    rng = np.random.default_rng(2)
    for dtype in (np.uint8, np.int16, np.int32, np.int64, np.uint16):
        gt = rng.integers(0, 6, (9, 13, 11)).astype(dtype)
        gt[rng.random(gt.shape) < 0.6] = 0
        pred = rng.integers(0, 8, (9, 13, 11)).astype(dtype)
        pred[rng.random(gt.shape) < 0.6] = 0
        if np.dtype(dtype).kind == "i":
            pred[0, 0, 0] = -3  # not a class: ignored
        if np.dtype(dtype).itemsize >= 2:
            gt[1, 1, 1] = 300  # beyond the classes: ignored
        classes = [1, 2, 3, 5, 7]
        st_ = label_stats(gt, pred, classes)
        for i, ci in enumerate(classes, start=1):
            for j, cj in enumerate(classes, start=1):
                assert st_.confusion[i, j] == ((gt == ci) & (pred == cj)).sum()
        for c in classes:
            g, p = gt == c, pred == c
            assert st_.gt_count[c] == g.sum() and st_.pred_count[c] == p.sum()
            assert st_.intersection[c] == (g & p).sum()
            for m, boxes in ((g, st_.gt_box), (p, st_.pred_box)):
                if m.any():
                    idx = np.argwhere(m)
                    assert boxes[c] == (tuple(idx.min(0)), tuple(idx.max(0)))
                else:
                    assert c not in boxes
    # large label values go through the searchsorted path
    gt = np.zeros((5, 6), np.int64)
    gt[1:3, 1:4] = 100_000
    st_ = label_stats(gt, gt, [100_000])
    assert st_.gt_count[100_000] == 6 and st_.gt_box[100_000] == ((1, 1), (2, 3))


def test_profiles_and_validation():
    assert evaluator.get_profile("default").id == "default@1"
    assert evaluator.get_profile("cvpr24@1").tolerance == 2.0
    assert set(evaluator.PROFILES) == {"default", "cvpr24", "cvpr25"}
    with pytest.raises(ValueError, match="unknown metric profile"):
        evaluator.get_profile("cvpr23")
    with pytest.raises(ValueError, match="unknown metric profile"):
        evaluator.get_profile("default@9")
    gt = np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError, match="same shape"):
        evaluator.score_case(gt, np.zeros((4, 5), np.uint8), spacing=(1, 1))
    with pytest.raises(ValueError, match="integer label map"):
        evaluator.score_case(gt.astype(float), gt, spacing=(1, 1))
    with pytest.raises(ValueError, match="spacing"):
        evaluator.score_case(gt, gt, spacing=(1, 1, 1))
    s = evaluator.score_case(gt, gt, spacing=(1, 1), labels=[1], tolerance=1.0)
    assert s.tolerance == 1.0 and s.to_dict()["profile"] == "default@1"
