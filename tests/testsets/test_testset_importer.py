"""Importing real-challenge-style folders: npz pairs with (x, y, z) spacing, training files, NIfTI."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from data_manifests import import_dir, load_manifest
from data_manifests._npz import read_npz, write_npz


@pytest.fixture(scope="module")
def tiny(tiny_copy):
    return load_manifest(tiny_copy / "manifest.json", verify=False), tiny_copy  # generated once per session


def _challenge_folder(tiny, dest):
    """The 2024 layout: imgs/ and gts/ with the same names, spacing stored as (x, y, z)."""
    manifest, root = tiny
    picked = [c for c in manifest.cases if c.id.endswith("_0001")]
    for c in picked:
        inp, gt = read_npz(root / c.input.path), read_npz(root / c.gt.path)
        if c.dim == 3:
            inp["spacing"] = inp["spacing"][::-1].copy()
            gt["spacing"] = gt["spacing"][::-1].copy()
        else:
            gt.pop("spacing")
        write_npz(dest / "imgs" / f"{c.id}.npz", **inp)
        write_npz(dest / "gts" / f"{c.id}.npz", **gt)
    return picked


def test_import_challenge_folder_converts_spacing_and_reports_bad_files(tiny, tmp_path):
    src = tmp_path / "challenge"
    picked = _challenge_folder(tiny, src)
    (src / "imgs" / "2DBox_US_0099.npz").write_bytes(b"not a zip")
    write_npz(src / "imgs" / "2DBox_OCT_0042.npz", imgs=np.zeros((8, 8), np.uint8), boxes=np.zeros((1, 4), np.int64))
    write_npz(src / "gts" / "badname.npz", gts=np.ones((4, 4), np.uint8))
    write_npz(src / "imgs" / "badname.npz", imgs=np.ones((4, 4), np.uint8), boxes=np.zeros((1, 4), np.int64))
    res = import_dir(src, tmp_path / "real.json")
    assert res.data_root == src
    m = load_manifest(tmp_path / "real.json", data_root=src)
    assert [c.id for c in m.cases] == sorted(c.id for c in picked)
    by_id = {c.id: c for c in m.cases}
    for c in picked:
        got = by_id[c.id]
        assert got.modality == c.modality and got.dim == c.dim and got.shape == c.shape
        assert got.spacing == pytest.approx(c.spacing), f"{c.id}: spacing must come back in (z, y, x)"
        assert got.input.path == f"imgs/{c.id}.npz"
        assert [lab.voxels for lab in got.labels] == [lab.voxels for lab in c.labels]
    assert any("3DBox_CT_0001: spacing" in n and "(x, y, z)" in n for n in m.notes)
    reasons = dict((p.split("/")[-1], r) for p, r in res.skipped)
    assert "not a readable .npz" in reasons["2DBox_US_0099.npz"]
    assert "without a ground-truth file" in reasons["2DBox_OCT_0042.npz"]
    assert "2DBox_" in reasons["badname.npz"]


def test_import_splits_training_files_and_converts_nifti(tiny, tmp_path):
    manifest, root = tiny
    src = tmp_path / "mixed"
    c = manifest.case("3DBox_MR_0001")
    inp, gt = read_npz(root / c.input.path), read_npz(root / c.gt.path)
    write_npz(src / "train" / "3DBox_MR_0001.npz", imgs=inp["imgs"], gts=gt["gts"], spacing=gt["spacing"][::-1].copy())
    # NIfTI: arrays are (x, y, z); zooms (x, y, z)
    vol = np.zeros((40, 30, 12), dtype=np.int16)
    vol[5:20, 5:25, 2:8] = 300
    lab = np.zeros_like(vol, dtype=np.uint8)
    lab[5:20, 5:25, 2:8] = 7
    lab[22:26, 3:6, 4:6] = 9
    aff = np.diag([0.7, 0.8, 3.0, 1.0])
    (src / "imagesTs").mkdir(parents=True)
    (src / "labelsTs").mkdir()
    nib.save(nib.Nifti1Image(vol, aff), src / "imagesTs" / "liver_ct_001_0000.nii.gz")
    nib.save(nib.Nifti1Image(lab, aff), src / "labelsTs" / "liver_ct_001.nii.gz")
    nib.save(nib.Nifti1Image(vol, aff), src / "imagesTs" / "orphan_0000.nii.gz")
    res = import_dir(src, tmp_path / "mixed.json", data_out=tmp_path / "out")
    m = load_manifest(tmp_path / "mixed.json", data_root=tmp_path / "out")
    ids = [x.id for x in m.cases]
    assert ids == ["3DBox_CT_liver_ct_001", "3DBox_MR_0001"]
    ct = m.case("3DBox_CT_liver_ct_001")
    assert ct.shape == [12, 30, 40] and ct.spacing == pytest.approx([3.0, 0.8, 0.7])
    assert [lab.voxels for lab in ct.labels] == [15 * 20 * 6, 4 * 3 * 2]
    conv = read_npz(tmp_path / "out" / ct.input.path)
    assert "gts" not in conv and conv["imgs"].dtype == np.uint8 and conv["imgs"].shape == (12, 30, 40)
    assert conv["boxes"].tolist() == [[5, 5, 2, 19, 24, 7], [22, 3, 4, 25, 5, 5]]
    g = read_npz(tmp_path / "out" / ct.gt.path)["gts"]
    assert g[3, 6, 10] == 1 and g[4, 4, 23] == 2, "labels 7 and 9 renumbered to 1 and 2, arrays as (z, y, x)"
    mr = m.case("3DBox_MR_0001")
    assert mr.spacing == pytest.approx(c.spacing)
    assert "gts" not in read_npz(tmp_path / "out" / mr.input.path)
    assert any("orphan" in p and "without a label map" in r for p, r in res.skipped)
    assert any("labels renumbered" in n for n in m.notes)


def test_import_nothing_readable(tmp_path):
    (tmp_path / "empty").mkdir()
    res = import_dir(tmp_path / "empty", tmp_path / "x.json")
    assert res.manifest is None and not (tmp_path / "x.json").exists()
