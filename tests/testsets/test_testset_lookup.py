"""One test-set lookup rule (data_manifests.sets): what passes track validation is what runs and scoring open."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from api.challenges.schemas import TrackCreate, check_testset
from api.execution.testsets import forget_testsets, load_testset
from api.storage import Storage
from data_manifests import ManifestError, manifest_path_for, materialize, open_testset, write_manifest


@pytest.fixture(scope="module")
def extensionless(tiny_copy) -> tuple[Path, list[str]]:
    """A real manifest saved as ``<data root>/MANIFEST`` (no ``.json``), its data next to it."""
    manifest, data_root = materialize("tiny", tiny_copy.parent)  # the session's generated set: checked, not made
    path = write_manifest(manifest, Path(data_root) / "MANIFEST")
    return path, [c.id for c in manifest.cases]


def test_a_manifest_path_without_json_passes_validation_and_opens_at_run_start(extensionless, tmp_path) -> None:
    """Before: validation read any path, the run side took a name not ending in .json for a built-in set
    ("unknown built-in test set") — the track was accepted and every run of it failed in the worker."""
    path, ids = extensionless
    assert check_testset(str(path)) == str(path)
    track = TrackCreate(slug="main", testset=str(path))
    forget_testsets()
    manifest, root, index = load_testset(track.testset, Storage(tmp_path / "storage"))
    assert [c.id for c in manifest.cases] == ids and set(index) == set(ids)
    assert root == path.parent  # the data root is the manifest's folder, every file verified
    assert not (tmp_path / "storage" / "testsets").exists()  # nothing was materialized (nor a folder made) for it


def test_builtin_names_win_and_materialize(tmp_path) -> None:
    assert manifest_path_for("tiny").name == "tiny.json" and manifest_path_for("micro").name == "micro.json"
    manifest, root = open_testset("micro", lambda name: tmp_path / name)  # materialized: generated (micro: quick)
    assert root == tmp_path / "micro" / "micro" and len(manifest.cases) == 9


def test_a_missing_manifest_is_refused_when_the_track_is_made(tmp_path) -> None:
    missing = str(tmp_path / "nowhere" / "manifest.json")
    with pytest.raises(ValueError, match=r"neither a built-in set \(micro, small, tiny\) nor a readable manifest JSON"):
        check_testset(missing)
    with pytest.raises(ValidationError, match="does not exist"):
        TrackCreate(slug="main", testset=missing)
    with pytest.raises(ManifestError, match="no test set given"):
        manifest_path_for(" ")


def test_data_missing_next_to_a_valid_manifest_fails_with_the_file_named(extensionless, tmp_path) -> None:
    """Validation reads the manifest only; the run side checks every file and names the first one missing."""
    path, _ids = extensionless
    lonely = tmp_path / "lonely" / "set.manifest"
    lonely.parent.mkdir()
    lonely.write_bytes(path.read_bytes())
    assert check_testset(str(lonely)) == str(lonely)
    with pytest.raises(ManifestError, match="missing|does not exist"):
        open_testset(str(lonely), lambda name: pytest.fail(f"{name} is not a built-in set"))


def test_a_name_longer_than_a_run_can_record_is_refused(tmp_path) -> None:
    """runs.testset holds 200 characters: a longer manifest path was accepted (tracks hold 500), then cut when the
    run recorded it, and the scorer looked up a path that does not exist."""
    deep = tmp_path / ("d" * 120) / ("e" * 120) / "manifest.json"
    with pytest.raises(ValidationError, match="at most 200 characters"):
        TrackCreate(slug="main", testset=str(deep))
