"""Manifest schema, checksum verification, boxes, size classes, spacing order, deterministic npz."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from data_manifests import ManifestError, TestSetManifest, boxes_from_labels, load_manifest
from data_manifests._npz import read_npz, sha256_file, write_npz
from data_manifests.importer import infer_modality, to_array_order
from data_manifests.manifest import _tertiles, assign_size_classes, build_case, finalize_cases, write_manifest
from data_manifests.schema import CaseEntry


def _one_case_set(tmp_path):
    root = tmp_path / "data"
    labels = np.zeros((20, 30), dtype=np.uint8)
    labels[2:5, 3:9] = 1
    labels[10:18, 10:25] = 2
    write_npz(root / "inputs/2DBox_US_0001.npz", imgs=np.zeros((20, 30), np.uint8), boxes=boxes_from_labels(labels))
    write_npz(root / "gts/2DBox_US_0001.npz", gts=labels, spacing=np.array([1.0, 1.0]))
    case = build_case(case_id="2DBox_US_0001", modality="US", data_root=root, input_path="inputs/2DBox_US_0001.npz",
                      gt_path="gts/2DBox_US_0001.npz", shape=[20, 30], spacing=[1.0, 1.0],
                      names=["a", "b"], voxels=[18, 120])
    m = TestSetManifest(id="t", version="1", description="d", cases=finalize_cases([case]))
    path = write_manifest(m, tmp_path / "m.json")
    return path, root


def test_load_verifies_checksums_and_names_the_case(tmp_path):
    path, root = _one_case_set(tmp_path)
    m = load_manifest(path, data_root=root)
    assert m.modalities() == ["US"] and m.cases[0].labels[1].voxels == 120
    # altered file: same size, different bytes
    f = root / "gts/2DBox_US_0001.npz"
    data = bytearray(f.read_bytes())
    data[-30] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=r"case 2DBox_US_0001: ground truth file gts/2DBox_US_0001.npz has sha256"):
        load_manifest(path, data_root=root)
    assert load_manifest(path, data_root=root, verify=False).id == "t"
    (root / "inputs/2DBox_US_0001.npz").unlink()
    with pytest.raises(ManifestError, match=r"case 2DBox_US_0001: input file inputs/2DBox_US_0001.npz is missing"):
        load_manifest(path, data_root=root)


def test_invalid_manifests_are_clear_errors(tmp_path):
    path, _ = _one_case_set(tmp_path)
    raw = json.loads(path.read_text())
    raw["cases"][0]["labels"][0]["value"] = 3
    path.write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match=r"case 2DBox_US_0001: .*label values must be 1..K"):
        load_manifest(path)
    path.write_text("{not json")
    with pytest.raises(ManifestError, match="not readable JSON"):
        load_manifest(path)
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path / "nope.json")


@pytest.mark.parametrize("patch, message", [
    ({"dim": 3}, "id prefix does not match"),
    ({"shape": [20]}, "not a 2D spatial shape"),
    ({"spacing": [1.0, 0.0]}, "positive"),
    ({"input": {"path": "../x.npz", "sha256": "0" * 64, "bytes": 1}}, "relative"),
    ({"gt": {"path": "inputs/2DBox_US_0001.npz", "sha256": "0" * 64, "bytes": 1}}, "different files"),
    ({"extra": 1}, "Extra inputs"),
])
def test_schema_rejects(tmp_path, patch, message):
    path, _ = _one_case_set(tmp_path)
    case = json.loads(path.read_text())["cases"][0]
    case.update(patch)
    with pytest.raises(ValidationError, match=message):
        CaseEntry.model_validate(case)


def test_boxes_follow_the_challenge_rule():
    lab = np.zeros((6, 40, 50), dtype=np.uint8)
    lab[1:3, 5:9, 10:20] = 1
    lab[4, 30, 45] = 2
    b = boxes_from_labels(lab)
    assert b.dtype == np.int64
    assert b.tolist() == [[10, 5, 1, 19, 8, 2], [45, 30, 4, 45, 30, 4]]
    b2 = boxes_from_labels(lab[1])
    assert b2.tolist() == [[10, 5, 19, 8]]
    with pytest.raises(ValueError, match="label 2 is empty"):
        boxes_from_labels(lab[1], 2)
    j = boxes_from_labels(lab, jitter=3, rng=np.random.default_rng(0))
    assert (j[:, [0, 1]] <= b[:, [0, 1]]).all() and (j[:, [3, 4]] >= b[:, [3, 4]]).all()
    assert (j[:, [2, 5]] == b[:, [2, 5]]).all(), "jitter never moves z"
    assert (j[:, 3] <= 49).all() and (j[:, 4] <= 39).all()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 5))
def test_boxes_match_brute_force(seed, k):
    rng = np.random.default_rng(seed)
    lab = np.zeros((5, 17, 23), dtype=np.uint8)
    for i in range(1, k + 1):
        z, y, x = rng.integers(0, 5), rng.integers(0, 17), rng.integers(0, 23)
        lab[z : z + rng.integers(1, 4), y : y + rng.integers(1, 6), x : x + rng.integers(1, 6)] = i
    k_eff = int(lab.max())
    present = [i for i in range(1, k_eff + 1) if (lab == i).any()]
    if present != list(range(1, k_eff + 1)):
        return
    boxes = boxes_from_labels(lab)
    for i, box in enumerate(boxes, start=1):
        zz, yy, xx = np.nonzero(lab == i)
        assert box.tolist() == [xx.min(), yy.min(), zz.min(), xx.max(), yy.max(), zz.max()]


def test_size_classes_are_tertiles_per_dimensionality():
    assert _tertiles([5, 1, 3, 2, 4, 6]) == ["large", "small", "medium", "small", "medium", "large"]
    assert _tertiles([1, 1, 1]) == ["small"] * 3
    cases = [
        {"dim": d, "shape": [10, 10] if d == 2 else [10, 10, 10], "labels": [{"voxels": v}, {"voxels": 50 if d == 2 else 500}]}
        for d, v in [(2, 1), (2, 5), (2, 9), (3, 10), (3, 50), (3, 90)]
    ]
    assign_size_classes(cases)
    assert [c["size_class"] for c in cases] == ["small", "medium", "large"] * 2


def test_npz_writer_is_deterministic_and_standard(tmp_path):
    a = np.arange(1000, dtype=np.uint8).reshape(10, 100)
    b = np.array([[1, 2, 3, 4]], dtype=np.int64)
    write_npz(tmp_path / "x.npz", imgs=a, boxes=b)
    write_npz(tmp_path / "y.npz", imgs=a, boxes=b)
    assert sha256_file(tmp_path / "x.npz") == sha256_file(tmp_path / "y.npz")
    with np.load(tmp_path / "x.npz", allow_pickle=False) as f:
        assert f.files == ["imgs", "boxes"] and np.array_equal(f["imgs"], a)
    with zipfile.ZipFile(tmp_path / "x.npz") as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
    assert read_npz(tmp_path / "x.npz", ("boxes",))["boxes"].tolist() == [[1, 2, 3, 4]]
    with pytest.raises(TypeError, match="pickles"):
        write_npz(tmp_path / "z.npz", bad=np.array([object()]))


@pytest.mark.parametrize("stored, order, expected, word", [
    ((0.8, 0.8, 2.5), "auto", [2.5, 0.8, 0.8], "(x, y, z)"),
    ((2.5, 0.8, 0.8), "auto", [2.5, 0.8, 0.8], "already"),
    ((1.0, 1.0, 1.0), "auto", [1.0, 1.0, 1.0], "isotropic"),
    ((0.7, 0.9, 3.0), "auto", [3.0, 0.9, 0.7], "ambiguous"),
    ((0.8, 0.8, 2.5), "zyx", [0.8, 0.8, 2.5], "requested"),
    ((2.5, 0.8, 0.8), "xyz", [0.8, 0.8, 2.5], "requested"),
])
def test_spacing_order(stored, order, expected, word):
    sp, how = to_array_order(stored, order)
    assert sp == expected and word in how


@pytest.mark.parametrize("name, dim, mod", [
    ("3DBox_CT_0566", 3, "CT"), ("2DBox_X-Ray_0053", 2, "X-Ray"), ("2DBox_CXR_0001", 2, "X-Ray"),
    ("2DBox_Endoscope_7", 2, "Endoscopy"), ("2DBox_Microscope_1", 2, "Microscopy"), ("liver_mri_t2", None, "MR"),
    ("case_fundus_photo", None, "Fundus"), ("2DBox_Dermoscopy_0003", 2, "Dermoscopy"), ("abc_123", None, None),
])
def test_infer_modality(name, dim, mod):
    assert infer_modality(name) == (dim, mod)
