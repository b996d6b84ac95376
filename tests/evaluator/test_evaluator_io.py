"""Safe case I/O: npz without pickles, size limits from headers, clear errors, NIfTI spacing."""

from __future__ import annotations

import io as _io
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from evaluator.io import (
    CaseFormatError,
    Spacing,
    load_case_input,
    load_ground_truth,
    load_npz,
    load_prediction,
    parse_case_name,
    spacing_to_array_order,
)


def _npz(path: Path, **arrays) -> Path:
    np.savez_compressed(path, **arrays)
    return path


def test_load_prediction_shape_error_names_file_and_fix(tmp_path):
    p = _npz(tmp_path / "3DBox_CT_0001.npz", segs=np.zeros((10, 64, 64), np.uint8))
    with pytest.raises(CaseFormatError) as exc:
        load_prediction(p, expected_shape=(12, 64, 64))
    assert str(exc.value) == (
        "output 3DBox_CT_0001.npz: array 'segs' has shape (10, 64, 64) but the input's spatial shape is "
        "(12, 64, 64); write a label map of the input's shape"
    )


def test_load_prediction_accepts_valid_and_rejects_bad(tmp_path):
    good = np.zeros((5, 6), np.int32)
    good[1:3, 1:3] = 2
    out = load_prediction(_npz(tmp_path / "2DBox_US_0001.npz", segs=good), expected_shape=(5, 6))
    assert np.array_equal(out, good) and out.flags.writeable
    assert load_prediction(_npz(tmp_path / "b.npz", segs=good.astype(bool)), expected_shape=(5, 6)).dtype == bool
    # Fortran-ordered arrays come back with the right values
    f = np.asfortranarray(np.arange(30).reshape(5, 6))
    assert np.array_equal(load_prediction(_npz(tmp_path / "f.npz", segs=f), expected_shape=(5, 6)), f)
    with pytest.raises(CaseFormatError, match=r"dtype float32; write an integer label map"):
        load_prediction(_npz(tmp_path / "c.npz", segs=good.astype(np.float32)), expected_shape=(5, 6))
    with pytest.raises(CaseFormatError, match=r"missing array 'segs' \(arrays present: 'seg'\)"):
        load_prediction(_npz(tmp_path / "d.npz", seg=good), expected_shape=(5, 6))
    with pytest.raises(CaseFormatError, match="negative labels"):
        load_prediction(_npz(tmp_path / "e.npz", segs=good - 1), expected_shape=(5, 6))
    with pytest.raises(CaseFormatError, match="file not found"):
        load_prediction(tmp_path / "none.npz", expected_shape=(5, 6))


def test_pickles_are_never_loaded(tmp_path):
    p = tmp_path / "3DBox_CT_0002.npz"
    np.savez(p, segs=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(CaseFormatError, match=r"3DBox_CT_0002.npz: array 'segs' holds Python objects \(a pickle\)"):
        load_prediction(p, expected_shape=(1,))


def test_corrupt_and_non_zip_files(tmp_path):
    p = tmp_path / "x.npz"
    np.save(p, np.zeros(3))  # a plain .npy renamed .npz
    (tmp_path / "x.npz.npy").rename(p) if (tmp_path / "x.npz.npy").exists() else None
    with pytest.raises(CaseFormatError, match=r"x.npz: not a readable .npz \(zip\) archive"):
        load_npz(p, required_keys=("segs",))
    good = _npz(tmp_path / "g.npz", segs=np.arange(10000, dtype=np.int64))
    data = bytearray(good.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\0" * 64  # damage the compressed stream
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(CaseFormatError, match=r"bad.npz"):
        load_npz(bad, required_keys=("segs",))


def test_size_limit_is_checked_before_decompressing(tmp_path, monkeypatch):
    p = _npz(tmp_path / "big.npz", segs=np.zeros((200, 200, 50), np.uint8))  # 2 MB of zeros
    assert p.stat().st_size < 50_000

    def no_decompress(*a, **k):  # the check must come from the headers alone
        raise AssertionError("decompressed before the size check")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_decompress)
    with pytest.raises(CaseFormatError, match=r"big.npz: decompresses to \d+ bytes, over the limit of 1000000"):
        load_npz(p, required_keys=("segs",), max_bytes=1_000_000)
    monkeypatch.undo()
    with pytest.raises(CaseFormatError, match="over the limit"):
        load_prediction(p, expected_shape=(200, 200, 50), max_bytes=1_000_000)
    assert load_prediction(p, expected_shape=(200, 200, 50)).shape == (200, 200, 50)


def test_lying_zip_header_cannot_inflate_past_declared_size(tmp_path):
    # an .npy whose header declares more data than the member holds: refused as truncated
    buf = _io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": (1000,)})
    p = tmp_path / "lie.npz"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("segs.npy", buf.getvalue() + b"\0" * 10)
    with pytest.raises(CaseFormatError, match="truncated"):
        load_npz(p, required_keys=("segs",))


def test_case_input_and_ground_truth(tmp_path):
    imgs = np.zeros((4, 8, 8), np.uint8)
    boxes = np.array([[1, 1, 0, 5, 5, 3]])
    p = _npz(tmp_path / "3DBox_MR_0007.npz", imgs=imgs, boxes=boxes, spacing=np.array([0.8, 0.8, 2.5]))
    case = load_case_input(p)
    assert (case.dim, case.modality, case.name) == (3, "MR", "3DBox_MR_0007.npz")
    assert case.spacing == (2.5, 0.8, 0.8) and case.spacing.stored == (0.8, 0.8, 2.5)
    with pytest.raises(CaseFormatError, match=r"'boxes' has shape \(1, 4\); a 3D case needs \(N, 6\)"):
        load_case_input(_npz(tmp_path / "3DBox_MR_0008.npz", imgs=imgs, boxes=np.zeros((1, 4))))
    g = np.zeros((4, 8, 8), np.uint8)
    gp = _npz(tmp_path / "3DBox_CT_0001.npz", gts=g, spacing=np.array([2.5, 0.7, 0.7], np.float32))
    gts, sp = load_ground_truth(gp)
    assert sp == (2.5, float(np.float32(0.7)), float(np.float32(0.7)))  # array order kept, float32 exact
    with pytest.raises(CaseFormatError, match="without a 'spacing'"):
        load_ground_truth(_npz(tmp_path / "3DBox_CT_0002.npz", gts=g))
    gts2, sp2 = load_ground_truth(_npz(tmp_path / "2DBox_US_0001.npz", gts=np.zeros((5, 5), np.uint8)))
    assert sp2 == (1.0, 1.0)
    with pytest.raises(CaseFormatError, match="dtype float64; ground truth must be an integer"):
        load_ground_truth(_npz(tmp_path / "2DBox_US_0002.npz", gts=np.zeros((5, 5))))


def test_spacing_order_rules():
    assert spacing_to_array_order([0.8, 0.8, 2.5])[0] == (2.5, 0.8, 0.8)
    assert spacing_to_array_order([2.5, 0.8, 0.8])[0] == (2.5, 0.8, 0.8)
    assert spacing_to_array_order([1, 1, 1])[0] == (1.0, 1.0, 1.0)
    assert spacing_to_array_order([1, 2, 3])[0] == (3.0, 2.0, 1.0)
    assert spacing_to_array_order([1, 2, 3], "zyx")[0] == (1.0, 2.0, 3.0)
    s = Spacing((3.0, 2.0, 1.0), (1.0, 2.0, 3.0))
    assert isinstance(s, tuple) and s.stored == (1.0, 2.0, 3.0)
    import pickle

    assert pickle.loads(pickle.dumps(s)).stored == s.stored


def test_nifti_label_map_spacing_in_array_axis_order(tmp_path):
    data = np.zeros((6, 7, 8), np.int16)
    data[1:3, 2:5, 3:7] = 2
    img = nib.Nifti1Image(data, np.diag([0.7, 0.9, 3.0, 1.0]))
    p = tmp_path / "3DBox_CT_0003.nii.gz"
    nib.save(img, str(p))
    gts, sp = load_ground_truth(p)
    assert np.array_equal(gts, data) and sp == pytest.approx((0.7, 0.9, 3.0))
    seg = load_prediction(p, expected_shape=(6, 7, 8))
    assert np.array_equal(seg, data)
    with pytest.raises(CaseFormatError, match="shape"):
        load_prediction(p, expected_shape=(6, 7, 9))
    f = tmp_path / "f.nii"
    nib.save(nib.Nifti1Image(data.astype(np.float32) + 0.5, np.eye(4)), str(f))
    with pytest.raises(CaseFormatError, match="non-integer"):
        load_ground_truth(f)


def test_parse_case_name():
    assert parse_case_name("2DBox_US_0001.npz") == (2, "US", "0001")
    assert parse_case_name("3DBox_CT_0566.npz") == (3, "CT", "0566")
    assert parse_case_name("/x/2DBox_X-Ray_0012.npz") == (2, "X-Ray", "0012")
    assert parse_case_name("3DBox_PET_0001.nii.gz") == (3, "PET", "0001")
    with pytest.raises(CaseFormatError, match="expected 2DBox_<MODALITY>_<id>.npz"):
        parse_case_name("case_0001.npz")
