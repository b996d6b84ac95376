"""Manifest schema migrations. Version 1 -> 2: point prompts (``LabelInfo.point``) computed from the ground truth.

Old manifests still load (``load_manifest`` without a data root returns them as they are, ``schema_version`` 1 and no
points; with a data root it upgrades them in memory); :func:`migrate_manifest` (``segarena testset migrate``)
rewrites the file. An upgrade never changes anything else: files, checksums, labels and size classes stay.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ._npz import read_npz
from .points import label_points
from .schema import SCHEMA_VERSION, TestSetManifest

__all__ = ["upgrade_manifest", "migrate_manifest", "read_label_map"]


def read_label_map(path: str | os.PathLike[str]) -> npt.NDArray[np.generic]:
    """A test set's ground-truth label map (``gts`` of its ``.npz``; the importer writes NIfTI cases as ``.npz``)."""
    return read_npz(Path(path), ("gts",))["gts"]


def upgrade_manifest(manifest: TestSetManifest, data_root: str | os.PathLike[str]) -> TestSetManifest:
    """``manifest`` at the current schema version (a copy; unchanged if current already). Version 1 -> 2 reads each
    case's ground truth under ``data_root`` and stores one point per non-empty structure."""
    if manifest.schema_version >= SCHEMA_VERSION:
        return manifest
    root = Path(data_root)
    raw = manifest.model_dump(mode="json")
    for case in raw["cases"]:
        gts = read_label_map(root / case["gt"]["path"])
        if list(gts.shape) != list(case["shape"]):
            raise ValueError(f"case {case['id']}: ground truth has shape {list(gts.shape)}, the manifest says "
                             f"{case['shape']}")
        points = label_points(gts, len(case["labels"]), case["spacing"])
        for lab, pt in zip(case["labels"], points, strict=True):
            lab["point"] = pt
    raw["schema_version"] = SCHEMA_VERSION
    raw["notes"] = [*raw.get("notes", []), f"upgraded from schema version {manifest.schema_version} to "
                    f"{SCHEMA_VERSION}: point prompts computed from the ground truth"]
    return TestSetManifest.model_validate(raw)


def migrate_manifest(path: str | os.PathLike[str], *, data_root: str | os.PathLike[str] | None = None,
                     out: str | os.PathLike[str] | None = None) -> TestSetManifest:
    """Load the manifest at ``path`` (data root: its folder unless given; every file checked), upgrade it and write
    it to ``out`` (default: in place). Returns the upgraded manifest."""
    from .manifest import ManifestError, load_manifest, write_manifest

    p = Path(path)
    root = Path(data_root) if data_root is not None else p.parent
    try:
        manifest = load_manifest(p, data_root=root, verify=True)
    except ValueError as exc:
        raise ManifestError(f"manifest {p}: cannot upgrade: {exc}") from None
    write_manifest(manifest, out if out is not None else p)
    return manifest
