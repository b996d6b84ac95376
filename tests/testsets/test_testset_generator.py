"""The synthetic generator: committed manifests reproduced byte for byte, challenge format, realism."""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy import ndimage

from data_manifests import ManifestError, generate, load_manifest, materialize
from data_manifests._npz import npz_keys, read_npz
from data_manifests.manifest import boxes_from_labels, dump_manifest
from data_manifests.schema import MODALITIES
from data_manifests.sets import SETS_DIR

RGB = {"Endoscopy", "Fundus", "Microscopy", "Dermoscopy"}
GRAY = {"US", "X-Ray", "OCT", "Mammography"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return generate("tiny", 0, root), root


def test_tiny_reproduces_the_committed_manifest_byte_for_byte(tiny):
    manifest, root = tiny
    committed = (SETS_DIR / "tiny.json").read_text(encoding="utf-8")
    assert (root / "manifest.json").read_text(encoding="utf-8") == committed
    assert dump_manifest(manifest) == committed
    load_manifest(SETS_DIR / "tiny.json", data_root=root)        # every checksum matches


def test_micro_reproduces_its_manifest_and_is_tinys_first_case_of_each_modality(tiny, tmp_path):
    """``micro`` (smoke tests, the demo in tests) is committed like tiny, and its files are tiny's first cases."""
    tiny_manifest, tiny_root = tiny
    manifest = generate("micro", 0, tmp_path)
    assert (tmp_path / "manifest.json").read_text(encoding="utf-8") == (SETS_DIR / "micro.json").read_text(encoding="utf-8")
    load_manifest(SETS_DIR / "micro.json", data_root=tmp_path)
    assert manifest.modalities() == list(MODALITIES[:9]) and len(manifest.cases) == 9
    firsts = {c.id: c for c in tiny_manifest.cases if c.id.endswith("_0001")}
    assert [c.id for c in manifest.cases] == list(firsts)
    for c in manifest.cases:
        for ref in ("input", "gt"):
            path = getattr(c, ref).path
            assert (tmp_path / path).read_bytes() == (tiny_root / path).read_bytes(), (c.id, ref)


def test_tiny_covers_the_nine_modalities_and_is_small(tiny):
    manifest, root = tiny
    assert manifest.modalities() == list(MODALITIES[:9])
    assert all(sum(c.modality == m for c in manifest.cases) >= 2 for m in manifest.modalities())
    total = sum(p.stat().st_size for p in root.rglob("*.npz"))
    assert total < 30e6
    assert manifest.generator.size == "tiny" and manifest.generator.seed == 0


def test_files_are_in_the_challenge_format(tiny):
    manifest, root = tiny
    for c in manifest.cases:
        assert c.input.path == f"inputs/{c.id}.npz" and c.gt.path == f"gts/{c.id}.npz"
        keys = npz_keys(root / c.input.path)
        assert "gts" not in keys, f"{c.id}: ground truth must never be in the input"
        assert keys == (["imgs", "boxes", "spacing"] if c.dim == 3 else ["imgs", "boxes"])
        inp = read_npz(root / c.input.path)
        gt = read_npz(root / c.gt.path)
        img, boxes, gts = inp["imgs"], inp["boxes"], gt["gts"]
        assert img.dtype == np.uint8 and img.max() > 100
        if c.modality in RGB:
            assert img.ndim == 3 and img.shape[2] == 3
        elif c.modality in GRAY:
            assert img.ndim == 2
        else:
            assert img.ndim == 3 and c.dim == 3
        assert list(gts.shape) == c.shape == list(img.shape[: c.dim])
        k = len(c.labels)
        assert int(gts.max()) == k and boxes.shape == (k, 2 * c.dim) and boxes.dtype == np.int64
        np.testing.assert_array_equal(boxes, boxes_from_labels(gts))
        counts = np.bincount(gts.ravel(), minlength=k + 1)[1:]
        assert [lab.voxels for lab in c.labels] == counts.tolist()
        assert counts.min() >= 12, f"{c.id}: a structure has fewer than 12 voxels"
        np.testing.assert_allclose(gt["spacing"], c.spacing)
        if c.dim == 3:
            np.testing.assert_allclose(inp["spacing"], c.spacing)
            sz, sy, sx = c.spacing
            assert sy == sx and sz != sy, f"{c.id}: spacing must be array order (z, y, x), anisotropic"
            if c.modality in ("CT", "MR"):
                assert sz > sy, f"{c.id}: slices are thicker than the in-plane pixels"


def test_several_structures_of_very_different_sizes(tiny):
    manifest, _ = tiny
    for c in manifest.cases:
        v = [lab.voxels for lab in c.labels]
        assert len(v) >= 2, c.id
        if c.modality not in ("Microscopy",):
            assert max(v) / min(v) >= 3, f"{c.id}: sizes {v} too similar"
    classes = {lab.size_class for c in manifest.cases for lab in c.labels}
    assert classes == {"small", "medium", "large"}
    assert {c.size_class for c in manifest.cases} == {"small", "medium", "large"}


def _touching(gts, a, b):
    return bool((ndimage.binary_dilation(gts == a) & (gts == b)).any())


def test_nested_and_touching_structures(tiny):
    manifest, root = tiny
    for c in manifest.cases:
        gts = read_npz(root / c.gt.path)["gts"]
        names = [lab.name for lab in c.labels]
        if c.modality == "Fundus":                       # cup nested in the disc: the disc surrounds it
            cup = gts == 2
            filled = ndimage.binary_fill_holes((gts == 1) | cup)
            assert (filled & cup).sum() == cup.sum() and _touching(gts, 1, 2)
        if c.modality == "CT":                           # lesion inside the liver
            les = names.index("liver lesion") + 1
            assert _touching(gts, les, 1)
            assert not _touching(gts, les, 0) or (ndimage.binary_dilation(gts == les) & (gts == 0)).sum() < (gts == les).sum()
        if c.modality == "OCT":                          # layers stacked on each other
            assert all(_touching(gts, i, i + 1) for i in range(1, 5))
        if c.modality == "US":                           # nodule within the lobe
            assert _touching(gts, 2, 1)


def test_modalities_look_different_from_each_other(tiny):
    """Cheap statistics that separate the modalities' appearance (what a person would notice)."""
    manifest, root = tiny
    stats = {}
    for c in manifest.cases:
        img = read_npz(root / c.input.path)["imgs"].astype(np.float64)
        stats.setdefault(c.modality, []).append(img)
    ct = stats["CT"][0]
    assert (ct < 10).mean() > 0.3, "CT: air outside the body is black"
    pet = stats["PET"][0]
    assert np.percentile(pet, 50) < 30, "PET: mostly dark with hot spots"
    us = stats["US"][0]
    assert (us == 0).mean() > 0.03 and np.std(np.diff(us, axis=1)[us[:, 1:] > 0]) > 25, "US: speckle and black margins"
    for m in ("Endoscopy", "Fundus"):
        img = stats[m][0]
        assert img[..., 0].mean() > img[..., 2].mean() + 20, f"{m}: reddish"
    fundus = stats["Fundus"][0]
    assert fundus[0, 0].sum() == 0, "Fundus: black outside the circular field"
    # MR contrast varies between cases: the lateral ventricles are dark in some, bright in others
    rel = []
    for c in [c for c in manifest.cases if c.modality == "MR"]:
        img = read_npz(root / c.input.path)["imgs"].astype(np.float64)
        gts = read_npz(root / c.gt.path)["gts"]
        rel.append(img[gts == 3].mean() / img[(gts == 0) & (img > 20)].mean())
    assert max(rel) / min(rel) > 1.3, f"MR contrast should vary between cases, ventricle/brain ratios {rel}"


def test_other_seed_other_bytes(tmp_path, tiny):
    manifest, _ = tiny
    other = generate("micro", 1, tmp_path)  # micro: tiny's first case of each modality (the same seeds per case)
    assert other.id == "synthetic-micro-seed1"
    firsts = {c.id: c.input.sha256 for c in manifest.cases}
    assert all(c.input.sha256 != firsts[c.id] for c in other.cases)
    with pytest.raises(ValueError, match="unknown size"):
        generate("huge", 0, tmp_path)


def test_smalls_extra_modalities_reproduce_its_committed_cases(tmp_path, monkeypatch):
    """The two modalities only the demo's ``small`` set has (Dermoscopy, Mammography: the generator's other colour and
    greyscale code), generated alone by the real generator: every case's files are the committed ones, byte for byte
    (size classes are relative to the whole set, so only what a case is made of is compared). (The whole set, 55
    cases: the slow test below.)"""
    import dataclasses
    import json

    from data_manifests import generator

    extra = ("Dermoscopy", "Mammography")
    assert not set(extra) & set(generator.SIZES["tiny"].modalities)
    monkeypatch.setitem(generator.SIZES, "small", dataclasses.replace(generator.SIZES["small"], modalities=extra))
    m = generate("small", 0, tmp_path)
    committed = {c["id"]: c for c in json.loads((SETS_DIR / "small.json").read_text(encoding="utf-8"))["cases"]}
    got = json.loads(dump_manifest(m))["cases"]
    assert len(got) == 10 and {c["modality"] for c in got} == set(extra)

    def made_of(case: dict) -> tuple:
        return (case["input"], case["gt"], case["shape"], case["spacing"],
                [(lab["value"], lab["name"], lab["voxels"], lab["point"]) for lab in case["labels"]])

    assert [made_of(c) for c in got] == [made_of(committed[c["id"]]) for c in got]


@pytest.mark.slow  # generates the whole demo set (55 cases): ~6 s of CPU; micro, tiny and small's extra modalities are
def test_small_reproduces_its_committed_manifest(tmp_path):  # checked in --fast
    m = generate("small", 0, tmp_path)
    assert dump_manifest(m) == (SETS_DIR / "small.json").read_text(encoding="utf-8")
    assert m.modalities() == list(MODALITIES)


def test_materialize_generates_once_and_repairs(tmp_path):
    m, root = materialize("micro", tmp_path)  # the same code for every built-in set; micro generates quickest
    assert root == tmp_path / "micro" and len(m.cases) == 9
    f = root / m.cases[0].gt.path
    mtime = f.stat().st_mtime_ns
    m2, _ = materialize("micro", tmp_path)
    assert f.stat().st_mtime_ns == mtime, "an intact set is not regenerated"
    f.write_bytes(b"tampered")
    (root / m.cases[5].input.path).unlink()
    materialize("micro", tmp_path)
    load_manifest(SETS_DIR / "micro.json", data_root=root)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")], "no temporary folders left"
    with pytest.raises(ManifestError, match="unknown built-in test set 'nope'"):
        materialize("nope", tmp_path)
