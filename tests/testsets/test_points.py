"""Point prompts in test-set manifests (schema version 2): generator, importer, migration of version-1 manifests,
validation, and the input npz of the prompt modes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from data_manifests import (
    SCHEMA_VERSION,
    ManifestError,
    import_dir,
    interior_point,
    load_manifest,
    migrate_manifest,
)
from data_manifests.cli import app
from data_manifests.sets import builtin_manifest_path
from evaluator.interactive import interior_point as evaluator_point
from evaluator.interactive import manifest_points, prompt_inputs


@pytest.fixture(scope="module")
def tiny(tiny_copy: Path) -> Path:
    return tiny_copy  # the generator's output for (tiny, seed 0), generated once per session


def _gts(root: Path, case) -> np.ndarray:  # type: ignore[no-untyped-def]
    with np.load(root / case.gt.path) as f:
        return f["gts"]


def test_generator_writes_points_inside_each_structure_farthest_from_its_border(tiny: Path) -> None:
    m = load_manifest(tiny / "manifest.json", data_root=tiny)
    assert m.schema_version == SCHEMA_VERSION == 2
    dims = set()
    for case in m.cases:
        gts = _gts(tiny, case)
        dims.add(case.dim)
        for lab in case.labels:
            assert lab.point is not None and len(lab.point) == case.dim
            assert gts[tuple(lab.point)] == lab.value  # inside the structure
            # the evaluator's copy of the rule gives the same point (the packages share no code)
            assert evaluator_point(gts == lab.value, case.spacing) == lab.point
    assert dims == {2, 3}
    # the committed built-in manifest carries the same points (every run gets the same prompts)
    committed = json.loads(builtin_manifest_path("tiny").read_text())
    assert committed["schema_version"] == 2
    assert [[lab["point"] for lab in c["labels"]] for c in committed["cases"]] == \
        [[lab.point for lab in c.labels] for c in m.cases]


def test_point_is_the_farthest_voxel_on_the_spacing() -> None:
    m = np.zeros((7, 7, 27), bool)
    m[1:6, 1:6, 1:26] = True
    assert interior_point(m, (1.0, 1.0, 0.2)) == [3, 3, 13]  # a 5 mm cube at this spacing: its centre
    unit = interior_point(m, (1, 1, 1))
    assert unit[:2] == [3, 3] and unit == interior_point(m, (1, 1, 1))  # deterministic
    two_d = np.zeros((9, 9), bool)
    two_d[0:5, 0:5] = True  # touches the image corner: the border of the image counts
    assert interior_point(two_d) == [2, 2]


def _as_v1(src: Path, dst: Path) -> None:
    raw = json.loads(src.read_text())
    raw["schema_version"] = 1
    for c in raw["cases"]:
        for lab in c["labels"]:
            del lab["point"]
    dst.write_text(json.dumps(raw, indent=2))


def test_version_1_manifests_still_load_and_are_upgraded(tiny: Path, tmp_path: Path) -> None:
    v1 = tiny / "manifest-v1.json"
    _as_v1(tiny / "manifest.json", v1)
    old = load_manifest(v1)  # no data root: loads as it is
    assert old.schema_version == 1 and all(lab.point is None for c in old.cases for lab in c.labels)
    with pytest.raises(ValueError, match="no point prompt"):
        manifest_points(old.cases[0])
    up = load_manifest(v1, data_root=tiny)  # with the data: upgraded in memory
    want = load_manifest(tiny / "manifest.json", data_root=tiny)
    assert up.schema_version == 2
    assert [c.model_dump(exclude={"labels"}) for c in up.cases] == [c.model_dump(exclude={"labels"}) for c in want.cases]
    assert [[lab.point for lab in c.labels] for c in up.cases] == [[lab.point for lab in c.labels] for c in want.cases]
    assert any("upgraded from schema version 1" in n for n in up.notes)
    # migrate rewrites the file (CLI: segarena testset migrate)
    out = tmp_path / "migrated.json"
    res = CliRunner().invoke(app, ["migrate", str(v1), "--data", str(tiny), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["schema_version"] == 2
    assert load_manifest(out).schema_version == 2
    migrate_manifest(v1, data_root=tiny)  # in place
    assert json.loads(v1.read_text())["schema_version"] == 2


def test_upgrade_needs_the_ground_truth(tiny: Path, tmp_path: Path) -> None:
    root = tmp_path / "set"
    shutil.copytree(tiny, root)
    _as_v1(root / "manifest.json", root / "manifest.json")
    first = load_manifest(root / "manifest.json").cases[0]
    (root / first.gt.path).unlink()
    with pytest.raises(ManifestError, match="missing"):
        load_manifest(root / "manifest.json", data_root=root)
    res = CliRunner().invoke(app, ["migrate", str(root / "manifest.json")])
    assert res.exit_code == 2 and "error:" in res.output


def test_version_2_manifests_need_valid_points(tiny: Path, tmp_path: Path) -> None:
    raw = json.loads((tiny / "manifest.json").read_text())
    bad = tmp_path / "bad.json"
    raw["cases"][0]["labels"][0]["point"] = None
    bad.write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="no point prompt"):
        load_manifest(bad)
    raw["cases"][0]["labels"][0]["point"] = [0] * (raw["cases"][0]["dim"] + 1)
    bad.write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="is not a voxel"):
        load_manifest(bad)
    raw["cases"][0]["labels"][0]["point"] = [10_000] * raw["cases"][0]["dim"]
    bad.write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="is not a voxel"):
        load_manifest(bad)
    raw["schema_version"] = 3
    bad.write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="schema_version"):
        load_manifest(bad)


def test_importer_writes_points(tiny: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "imgs").mkdir(parents=True)
    (src / "gts").mkdir()
    m = load_manifest(tiny / "manifest.json")
    picked = [c for c in m.cases if c.id in ("3DBox_MR_0001", "2DBox_US_0001")]
    for c in picked:
        shutil.copy(tiny / c.input.path, src / "imgs" / Path(c.input.path).name)
        shutil.copy(tiny / c.gt.path, src / "gts" / Path(c.gt.path).name)
    res = import_dir(src, tmp_path / "out" / "manifest.json", data_out=tmp_path / "out")
    got = {c.id: [lab.point for lab in c.labels] for c in res.manifest.cases}
    assert got == {c.id: [lab.point for lab in c.labels] for c in picked}
    assert res.manifest.schema_version == 2


def test_prompt_inputs_from_the_manifest_points(tiny: Path) -> None:
    m = load_manifest(tiny / "manifest.json")
    for cid in ("3DBox_CT_0001", "2DBox_Fundus_0001"):
        case = m.case(cid)
        with np.load(tiny / case.input.path) as f:
            arrays = {k: f[k] for k in f.files}
        pts = manifest_points(case)
        p = prompt_inputs(arrays, prompt="point", points=pts)
        assert "boxes" not in p
        assert [d["fg"] for d in p["clicks"]] == [[lab.point] for lab in case.labels]
        assert p["clicks_order"] == [["fg"]] * len(case.labels)
        assert p["points"].tolist() == [lab.point for lab in case.labels] and p["points"].dtype == np.int64
        bp = prompt_inputs(arrays, prompt="box+point", points=pts)
        assert np.array_equal(bp["boxes"], arrays["boxes"])
