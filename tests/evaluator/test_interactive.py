"""Click placement, iteration inputs and AUC of ``evaluator.interactive`` on hand-built masks (analytic answers)."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate

from evaluator.interactive import (
    accumulate_clicks,
    auc,
    case_budget_s,
    click_classes,
    interactive_summary,
    interior_point,
    iteration_inputs,
    manifest_points,
    next_clicks,
    place_click,
    prompt_inputs,
    score_iteration,
    write_iteration_npz,
)


def test_one_fn_blob_gives_a_fg_click_at_its_centre() -> None:
    gt = np.zeros((20, 20, 20), np.uint8)
    gt[2:18, 2:18, 2:18] = 1
    pred = gt.copy()
    pred[5:10, 6:11, 7:12] = 0  # a 5x5x5 hole: unique centre (7, 8, 9)
    assert place_click(gt == 1, pred == 1, spacing=(1, 1, 1)) == ("fg", (7, 8, 9))
    assert next_clicks(gt, pred, spacing=(1, 1, 1)) == [{"label": 1, "kind": "fg", "point": [7, 8, 9]}]


def test_one_fp_blob_gives_a_bg_click() -> None:
    gt = np.zeros((16, 16), np.uint8)
    gt[1:5, 1:5] = 1
    pred = gt.copy()
    pred[8:15, 6:13] = 1  # a 7x7 false positive: centre (11, 9)
    assert place_click(gt == 1, pred == 1, spacing=(1, 1)) == ("bg", (11, 9))


def test_largest_error_component_wins_and_equal_sizes_take_the_first_in_c_order() -> None:
    gt = np.zeros((30, 30), np.uint8)
    pred = gt.copy()
    pred[20:25, 20:25] = 1  # 25 voxels, later in C order
    pred[2:5, 2:5] = 1  # 9 voxels
    assert place_click(gt == 1, pred == 1) == ("bg", (22, 22))
    pred[2:7, 2:7] = 1  # now 25 voxels as well, and first in C order
    assert place_click(gt == 1, pred == 1) == ("bg", (4, 4))


def test_diagonal_voxels_are_one_component_full_connectivity() -> None:
    gt = np.zeros((9, 9, 9), np.uint8)
    pred = gt.copy()
    for i in range(5):
        pred[i, i, i] = 1  # a diagonal line: one 26-connected component of 5 voxels
    pred[8, 0, 0] = pred[8, 0, 2] = 1
    kind, point = place_click(gt == 1, pred == 1)  # type: ignore[misc]
    assert kind == "bg" and point[0] == point[1] == point[2] and point[0] < 5


def test_ties_follow_the_reference_seeded_choice_and_are_stable() -> None:
    gt = np.zeros((12, 12, 12), np.uint8)
    pred = gt.copy()
    pred[2:6, 2:6, 2:6] = 1  # 4x4x4 cube: 8 voxels tie at the maximal distance
    dist_max = [(z, y, x) for z in (3, 4) for y in (3, 4) for x in (3, 4)]
    want = dist_max[int(np.random.RandomState(42).choice(8))]
    state = np.random.get_state()
    got = [place_click(gt == 1, pred == 1, spacing=(1, 1, 1)) for _ in range(3)]
    assert got == [("bg", want)] * 3
    assert str(np.random.get_state()) == str(state)  # the global generator is left alone


def test_perfect_prediction_gives_no_click() -> None:
    gt = np.zeros((8, 8, 8), np.uint8)
    gt[1:4, 1:4, 1:4] = 1
    gt[5:7, 5:7, 5:7] = 2
    pred = gt.copy()
    pred[5:7, 5:7, 5:7] = 0
    out = next_clicks(gt, pred, spacing=(1, 1, 1))
    assert out[0] == {"label": 1, "kind": None, "point": None}
    assert out[1]["kind"] == "fg"
    assert next_clicks(gt, gt, spacing=(1, 1, 1)) == [{"label": c, "kind": None, "point": None} for c in (1, 2)]


def test_anisotropic_spacing_moves_the_click_default_only() -> None:
    # A missed structure of 5 x 5 x 25 voxels. At spacing (1, 1, 0.2) mm it is a 5 mm cube: the farthest point from
    # its border is the unique centre (3, 3, 13). At unit spacing every x of 3..23 is as far (3 voxels) from the border.
    gt = np.zeros((7, 7, 27), np.uint8)
    gt[1:6, 1:6, 1:26] = 1
    pred = np.zeros_like(gt)
    assert place_click(gt == 1, pred == 1, spacing=(1.0, 1.0, 0.2)) == ("fg", (3, 3, 13))
    kind, p_unit = place_click(gt == 1, pred == 1, spacing=(1, 1, 1))  # type: ignore[misc]
    assert kind == "fg" and p_unit[:2] == (3, 3) and 3 <= p_unit[2] <= 23
    assert p_unit != (3, 3, 13)  # the seeded tie break picked another of the 21 equally far voxels
    # cvpr25 ignores the spacing, as the reference: the unit-spacing click
    assert place_click(gt == 1, pred == 1, spacing=(1.0, 1.0, 0.2), profile="cvpr25") == ("fg", p_unit)


def test_image_border_counts_as_border() -> None:
    gt = np.zeros((10, 10), np.uint8)
    pred = np.zeros_like(gt)
    pred[0:7, 0:7] = 1  # touches the image corner: the farthest point is its centre, not the corner
    assert place_click(gt == 1, pred == 1) == ("bg", (3, 3))
    assert place_click(gt == 1, pred == 1, profile="cvpr25") == ("bg", (3, 3))


def test_clicks_are_byte_identical_across_processes() -> None:
    code = (
        "import numpy as np, json\n"
        "from evaluator.interactive import next_clicks\n"
        "r = np.random.default_rng(7)\n"
        "g = (r.random((12, 40, 40)) < 0.5).astype(np.uint8); g[2:10, 5:30, 5:30] = 2\n"
        "p = np.roll(g, 1, axis=2)\n"
        "print(json.dumps([next_clicks(g, p, spacing=(3, 1, 1), profile=pr) for pr in ('default', 'cvpr25')]))\n"
    )
    root = Path(__file__).resolve().parents[2]
    outs = {subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, check=True).stdout
            for _ in range(2)}
    assert len(outs) == 1 and b'"fg"' in next(iter(outs))


def test_click_classes_per_profile() -> None:
    gt = np.array([[0, 2, 5], [0, 0, 0]], np.uint8)
    assert click_classes(gt) == [2, 5]
    assert click_classes(gt, labels=[1, 2]) == [1, 2]
    assert click_classes(gt, profile="cvpr25") == [2, 5]
    assert click_classes(np.array([[3, 4]]), profile="cvpr25") == [4]  # the reference skips the smallest value


def test_accumulate_clicks_reference_layout() -> None:
    it0 = [{"label": 1, "kind": "fg", "point": [1, 2, 3]}, {"label": 2, "kind": None, "point": None}]
    it1 = [{"label": 1, "kind": "bg", "point": [4, 5, 6]}, {"label": 2, "kind": "fg", "point": [7, 8, 9]}]
    acc = accumulate_clicks([it0, it1])
    assert acc == {"labels": [1, 2],
                   "clicks": [{"fg": [[1, 2, 3]], "bg": [[4, 5, 6]]}, {"fg": [[7, 8, 9]], "bg": []}],
                   "clicks_order": [["fg", "bg"], [None, "fg"]]}
    pts = [{"label": 1, "kind": "fg", "point": [0, 0, 0]}, {"label": 2, "kind": "fg", "point": [1, 1, 1]}]
    acc2 = accumulate_clicks([it0], initial=pts)
    assert acc2["clicks"][0]["fg"] == [[0, 0, 0], [1, 2, 3]] and acc2["clicks_order"][1] == ["fg", None]
    with pytest.raises(ValueError, match="label 9"):
        accumulate_clicks([it0, [{"label": 9, "kind": "fg", "point": [0, 0, 0]}]])


def test_iteration_inputs_npz_as_the_reference(tmp_path: Path) -> None:
    case = {"imgs": np.zeros((4, 6, 6), np.uint8), "spacing": np.array([2.0, 1.0, 1.0]),
            "boxes": np.array([[1, 1, 0, 4, 4, 3]])}
    assert iteration_inputs(case, iteration=0) == case
    acc = accumulate_clicks([[{"label": 1, "kind": "fg", "point": [1, 2, 3]}]])
    arrays = iteration_inputs(case, iteration=1, clicks=acc, prev_pred=np.ones((4, 6, 6), np.int32))
    assert sorted(arrays) == ["boxes", "clicks", "clicks_order", "imgs", "prev_pred", "spacing"]
    write_iteration_npz(tmp_path / "in.npz", arrays)
    with pytest.raises(ValueError):  # object arrays: a container must allow pickle, as with the reference
        np.load(tmp_path / "in.npz")["clicks"]
    with np.load(tmp_path / "in.npz", allow_pickle=True) as f:
        clicks = f["clicks"].tolist()
        assert clicks == [{"fg": [[1, 2, 3]], "bg": []}] and type(clicks[0]["fg"][0][0]) is int
    with zipfile.ZipFile(tmp_path / "in.npz") as z:  # no numpy-2-only module path: numpy 1.x containers load it
        assert b"_core" not in z.read("clicks.npy") and b"_core" not in z.read("clicks_order.npy")
    with np.load(tmp_path / "in.npz", allow_pickle=True) as f:
        assert f["clicks_order"].tolist() == [["fg"]] and f["clicks_order"].dtype.str == "<U2"
        assert f["prev_pred"].dtype == np.uint8 and int(f["prev_pred"].max()) == 1
    nobox = iteration_inputs(case, iteration=2, prompt="point", clicks=acc, prev_pred=None,
                             points=[{"label": 1, "kind": "fg", "point": [1, 1, 1]}])
    assert "boxes" not in nobox and nobox["points"].tolist() == [[1, 1, 1]] and not nobox["prev_pred"].any()
    pickle.dumps(arrays)


def test_prompt_inputs_modes() -> None:
    case = {"imgs": np.zeros((6, 6, 3), np.uint8), "boxes": np.array([[0, 0, 2, 2], [3, 3, 5, 5]])}
    pts = [{"label": 1, "kind": "fg", "point": [1, 1]}, {"label": 2, "kind": "fg", "point": [4, 4]}]
    assert prompt_inputs(case, prompt="box") == case
    p = prompt_inputs(case, prompt="point", points=pts)
    assert sorted(p) == ["clicks", "clicks_order", "imgs", "points"]
    assert p["clicks_order"] == [["fg"], ["fg"]] and p["points"].shape == (2, 2)
    bp = prompt_inputs(case, prompt="box+point", points=pts)
    assert "boxes" in bp and "clicks" in bp
    with pytest.raises(ValueError, match="prompt must be"):
        prompt_inputs(case, prompt="scribble")
    with pytest.raises(ValueError, match="points"):
        prompt_inputs(case, prompt="point")


def test_auc_is_scipy_cumulative_trapezoid_over_the_click_iterations() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        v = list(rng.random(6))
        ref = integrate.cumulative_trapezoid(np.array(v[-5:]), np.arange(5))[-1]
        assert auc(v) == ref and auc(v, profile="cvpr25") == ref
    assert auc([0.0, 1, 1, 1, 1, 1]) == 4.0
    assert auc([0.3, 0.5, 0.5, 0.5, 0.5, 0.5]) == 2.0  # the box iteration is not part of it
    assert math.isnan(auc([1.0, 1.0])) and math.isnan(auc([1, None, 1, 1, 1, 1]))
    s = interactive_summary([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0, 0, 0, 0, 0, 1.0])
    assert s["final_dsc"] == 0.6 and s["nsd_auc"] == 0.5 and s["dsc_auc"] == pytest.approx(1.6)


def test_score_iteration_profiles() -> None:
    gt = np.zeros((6, 8, 8), np.uint8)
    gt[1:5, 1:5, 1:5] = 1
    pred = np.zeros_like(gt)
    pred[1:5, 1:5, 1:3] = 1  # half: DSC 2*32/(64+32) = 2/3
    d = score_iteration(gt, pred, spacing=(1, 1, 1))
    c = score_iteration(gt, pred, spacing=(1, 1, 1), profile="cvpr25")
    assert d.dsc == c.dsc == 2 / 3 and c.profile == "cvpr25@1"
    tiny = np.zeros_like(gt)
    tiny[1, 1, 1] = 1  # DSC 2/65 <= 0.2: the reference does not compute NSD
    assert score_iteration(gt, tiny, spacing=(1, 1, 1), profile="cvpr25").nsd == 0.0
    assert score_iteration(gt, tiny, spacing=(1, 1, 1)).nsd > 0.0


def test_point_prompts_and_budget() -> None:
    m = np.zeros((5, 9, 9), bool)
    m[0:5, 2:7, 2:7] = True  # a 5-voxel cube touching the top and bottom of the volume: unique centre
    assert interior_point(m, (1, 1, 1)) == [2, 4, 4]
    case = {"id": "3DBox_CT_0001", "labels": [{"value": 1, "point": [2, 4, 4]}]}
    assert manifest_points(case) == [{"label": 1, "kind": "fg", "point": [2, 4, 4]}]
    with pytest.raises(ValueError, match="no point prompt"):
        manifest_points({"id": "x", "labels": [{"value": 1}]})
    with pytest.raises(ValueError, match="empty"):
        interior_point(np.zeros((3, 3), bool))
    assert case_budget_s(3) == 270.0 and case_budget_s(0) == 90.0
