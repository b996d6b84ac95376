"""Loading, verifying and writing manifests; boxes and size classes from label maps."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from ._npz import sha256_file
from .schema import SCHEMA_VERSION, SIZE_CLASSES, CaseEntry, FileRef, TestSetManifest

__all__ = [
    "ManifestError",
    "load_manifest",
    "dump_manifest",
    "write_manifest",
    "verify_files",
    "file_ref",
    "boxes_from_labels",
    "label_voxels",
    "assign_size_classes",
]


class ManifestError(Exception):
    """A manifest is invalid, or a file it names is missing or altered."""


def dump_manifest(manifest: TestSetManifest) -> str:
    """Canonical JSON text of a manifest (stable key order, 2-space indent, trailing newline)."""
    return json.dumps(manifest.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


def write_manifest(manifest: TestSetManifest, path: str | os.PathLike[str]) -> Path:
    """Write the canonical JSON of ``manifest`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(dump_manifest(manifest), encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_manifest(
    path: str | os.PathLike[str], *, data_root: str | os.PathLike[str] | None = None, verify: bool = True
) -> TestSetManifest:
    """Read and validate a manifest; with ``verify`` and ``data_root``, check every file.

    Raises
    ------
    ManifestError
        The file is unreadable or not valid JSON, the schema rejects it, or (when verifying)
        a case's input or ground-truth file is missing or its SHA-256 differs.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"manifest {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"manifest {path} is not readable JSON: {exc}") from None
    try:
        manifest = TestSetManifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        case = _case_at(raw, first["loc"])
        prefix = f"case {case}: " if case else ""
        raise ManifestError(
            f"manifest {path} is invalid: {prefix}{where}: {first['msg']} "
            f"({exc.error_count()} error(s))"
        ) from None
    if verify and data_root is not None:
        verify_files(manifest, data_root)
    if data_root is not None and manifest.schema_version < SCHEMA_VERSION:
        from .migrate import upgrade_manifest

        try:
            manifest = upgrade_manifest(manifest, data_root)
        except (OSError, ValueError, KeyError) as exc:
            raise ManifestError(f"manifest {path} (schema version {manifest.schema_version}) could not be upgraded "
                                f"to version {SCHEMA_VERSION} from the files under {data_root}: {exc}") from None
    return manifest


def _case_at(raw: object, loc: tuple[int | str, ...]) -> str | None:
    if len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int) and isinstance(raw, dict):
        try:
            return str(raw["cases"][loc[1]].get("id", f"#{loc[1]}"))
        except (KeyError, IndexError, AttributeError, TypeError):
            return f"#{loc[1]}"
    return None


def verify_files(
    manifest: TestSetManifest, data_root: str | os.PathLike[str], *, cases: Iterable[str] | None = None
) -> None:
    """Check that every (or each named) case's files exist with the recorded size and SHA-256."""
    root = Path(data_root)
    if not root.is_dir():
        raise ManifestError(f"data root {root} is not a directory")
    wanted = set(cases) if cases is not None else None
    for case in manifest.cases:
        if wanted is not None and case.id not in wanted:
            continue
        for role, ref in (("input", case.input), ("ground truth", case.gt)):
            f = root / ref.path
            if not f.is_file():
                raise ManifestError(f"case {case.id}: {role} file {ref.path} is missing under {root}")
            size = f.stat().st_size
            if size != ref.bytes:
                raise ManifestError(
                    f"case {case.id}: {role} file {ref.path} has {size} bytes, manifest says "
                    f"{ref.bytes}: the file was altered or belongs to another version of the set"
                )
            digest = sha256_file(f)
            if digest != ref.sha256:
                raise ManifestError(
                    f"case {case.id}: {role} file {ref.path} has sha256 {digest[:12]}…, manifest "
                    f"says {ref.sha256[:12]}…: the file was altered or belongs to another version"
                )


def file_ref(data_root: str | os.PathLike[str], path: str | os.PathLike[str]) -> FileRef:
    """A :class:`FileRef` for ``path`` (absolute or relative to ``data_root``)."""
    root = Path(data_root)
    p = Path(path)
    full = p if p.is_absolute() else root / p
    rel = full.resolve().relative_to(root.resolve()).as_posix()
    return FileRef(path=rel, sha256=sha256_file(full), bytes=full.stat().st_size)


def boxes_from_labels(
    labels: np.ndarray, n_labels: int | None = None, *, jitter: int = 0, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Bounding boxes of labels ``1..K`` by the challenge's rule, inclusive pixel coordinates.

    2D ``(H, W)`` → ``[x_min, y_min, x_max, y_max]`` per label; 3D ``(D, H, W)`` →
    ``[x_min, y_min, z_min, x_max, y_max, z_max]`` (x = last axis, z = first axis; the 3D box
    spans every slice of the structure). ``jitter`` > 0 widens each side by a random 0..jitter
    pixels (never in z), clipped to the image, as the challenge's ``bbox_shift`` did.
    """
    if labels.ndim not in (2, 3):
        raise ValueError(f"labels must be 2D or 3D, got shape {labels.shape}")
    k = int(labels.max()) if n_labels is None else int(n_labels)
    from scipy import ndimage

    objs = ndimage.find_objects(labels.astype(np.int32, copy=False), max_label=k)
    rows = []
    for i, sl in enumerate(objs, start=1):
        if sl is None:
            raise ValueError(f"label {i} is empty; cannot derive its box")
        lo = [s.start for s in sl]
        hi = [s.stop - 1 for s in sl]
        if labels.ndim == 2:
            (y0, x0), (y1, x1) = lo, hi
            box = [x0, y0, x1, y1]
        else:
            (z0, y0, x0), (z1, y1, x1) = lo, hi
            box = [x0, y0, z0, x1, y1, z1]
        if jitter > 0:
            if rng is None:
                raise ValueError("jitter needs an rng")
            h, w = labels.shape[-2:]
            d = rng.integers(0, jitter + 1, size=4)
            if labels.ndim == 2:
                box = [max(0, box[0] - d[0]), max(0, box[1] - d[1]), min(w - 1, box[2] + d[2]), min(h - 1, box[3] + d[3])]
            else:
                box = [max(0, box[0] - d[0]), max(0, box[1] - d[1]), box[2],
                       min(w - 1, box[3] + d[2]), min(h - 1, box[4] + d[3]), box[5]]
        rows.append(box)
    width = 4 if labels.ndim == 2 else 6
    return np.asarray(rows, dtype=np.int64).reshape(len(rows), width)


def label_voxels(labels: np.ndarray, n_labels: int | None = None) -> list[int]:
    """Voxel count of each label ``1..K``."""
    k = int(labels.max()) if n_labels is None else int(n_labels)
    counts = np.bincount(labels.ravel().astype(np.int64, copy=False), minlength=k + 1)
    return [int(c) for c in counts[1 : k + 1]]


def _tertiles(values: list[float]) -> list[str]:
    """Rank-based tertiles: sorted rank r of n → small if r < n/3, large if r >= 2n/3.

    Ties share the lowest rank of their group, so equal sizes get equal classes.
    """
    n = len(values)
    order = sorted(range(n), key=lambda i: values[i])
    out = [""] * n
    first_rank: dict[float, int] = {}
    for rank, i in enumerate(order):
        r = first_rank.setdefault(values[i], rank)
        out[i] = SIZE_CLASSES[0] if 3 * r < n else (SIZE_CLASSES[1] if 3 * r < 2 * n else SIZE_CLASSES[2])
    return out


def assign_size_classes(cases: list[dict[str, Any]]) -> None:
    """Fill ``size_class`` of every label and case in place (dicts in ``CaseEntry`` form).

    A structure's relative size is ``voxels / prod(shape)``. Labels are split into tertiles of
    relative size within each dimensionality (2D areas and 3D volumes are never compared), and
    cases into tertiles of their smallest structure's relative size, also per dimensionality.
    """
    for dim in (2, 3):
        group = [c for c in cases if c["dim"] == dim]
        labs = [(c, lab) for c in group for lab in c["labels"]]
        rel = [lab["voxels"] / float(np.prod(c["shape"])) for c, lab in labs]
        for (_, lab), cls in zip(labs, _tertiles(rel)):
            lab["size_class"] = cls
        smallest = [min((lab["voxels"] for lab in c["labels"]), default=0) / float(np.prod(c["shape"])) for c in group]
        for c, cls in zip(group, _tertiles(smallest)):
            c["size_class"] = cls


def build_case(
    *, case_id: str, modality: str, data_root: Path, input_path: str, gt_path: str,
    shape: list[int], spacing: list[float], names: list[str], voxels: list[int],
    points: list[list[int] | None] | None = None,
) -> dict[str, Any]:
    """A case in ``CaseEntry`` dict form with checksums; size classes are filled later. ``points``: the point
    prompt of each label (``data_manifests.points.label_points``, required by manifest schema version 2); computed
    from the ground-truth file when not given."""
    if points is None:  # computed from the ground-truth file
        from .migrate import read_label_map
        from .points import label_points

        points = label_points(read_label_map(Path(data_root) / gt_path), len(names), spacing)
    pts: list[list[int] | None] = list(points)
    return {
        "id": case_id,
        "modality": modality,
        "dim": len(shape),
        "input": file_ref(data_root, input_path).model_dump(),
        "gt": file_ref(data_root, gt_path).model_dump(),
        "shape": [int(n) for n in shape],
        "spacing": [float(s) for s in spacing],
        "labels": [
            {"value": i, "name": n, "voxels": int(v), "size_class": "medium",
             "point": None if pt is None else [int(x) for x in pt]}
            for i, (n, v, pt) in enumerate(zip(names, voxels, pts, strict=True), start=1)
        ],
        "size_class": "medium",
    }


def finalize_cases(cases: list[dict[str, Any]]) -> list[CaseEntry]:
    """Assign size classes and validate the cases."""
    assign_size_classes(cases)
    return [CaseEntry.model_validate(c) for c in cases]
