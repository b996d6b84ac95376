"""The evaluator on generated sets: a perfect prediction scores 1, a box-filled one visibly less."""

from __future__ import annotations

import numpy as np
import pytest

from data_manifests import load_manifest
from data_manifests._npz import read_npz

from evaluator import score_case


@pytest.fixture(scope="module")
def tiny(tiny_copy):
    return load_manifest(tiny_copy / "manifest.json", verify=False), tiny_copy  # generated once per session


def box_fill(boxes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The naive method: every box filled with its label (largest first, so small ones stay)."""
    seg = np.zeros(shape, dtype=np.uint8)
    d = len(shape)
    vol = [np.prod(b[d:] - b[:d] + 1) for b in boxes]
    for i in np.argsort(vol)[::-1]:
        b = boxes[i]
        if d == 2:
            x0, y0, x1, y1 = b
            seg[y0 : y1 + 1, x0 : x1 + 1] = i + 1
        else:
            x0, y0, z0, x1, y1, z1 = b
            seg[z0 : z1 + 1, y0 : y1 + 1, x0 : x1 + 1] = i + 1
    return seg


def test_perfect_prediction_scores_one_on_every_case(tiny):
    manifest, root = tiny
    for c in manifest.cases:
        gts = read_npz(root / c.gt.path)["gts"]
        for profile in ("default", "cvpr24"):
            s = score_case(gts, gts.copy(), spacing=c.spacing, profile=profile, labels=range(1, len(c.labels) + 1))
            assert s.dsc == pytest.approx(1.0) and s.nsd == pytest.approx(1.0), (c.id, profile, s)


def test_box_filled_prediction_scores_visibly_lower_on_every_modality(tiny):
    manifest, root = tiny
    per_mod: dict[str, list[tuple[float, float]]] = {}
    for c in manifest.cases:
        gts = read_npz(root / c.gt.path)["gts"]
        boxes = read_npz(root / c.input.path)["boxes"]
        pred = box_fill(boxes, gts.shape)
        s = score_case(gts, pred, spacing=c.spacing, labels=range(1, len(c.labels) + 1))
        assert s.dsc < 0.95 and s.nsd < 0.95, (c.id, s.dsc, s.nsd)
        per_mod.setdefault(c.modality, []).append((s.dsc, s.nsd))
    assert set(per_mod) == set(manifest.modalities())
    for mod, scores in per_mod.items():
        dsc, nsd = np.mean(scores, axis=0)
        print(f"{mod}: box fill DSC {dsc:.3f} NSD {nsd:.3f}")
        assert dsc < 0.9 and nsd < 0.8, f"{mod}: box fill too good (DSC {dsc:.3f}, NSD {nsd:.3f})"
