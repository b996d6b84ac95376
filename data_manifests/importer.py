"""Import a real challenge folder (or NIfTI images with label maps) as a test-set manifest.

Accepted inputs under ``src`` (searched recursively):

* challenge ``.npz`` pairs: an input file with ``imgs`` and ``boxes`` (``spacing`` for 3D) and a
  ground-truth file of the same name with ``gts`` (e.g. ``imgs/3DBox_CT_0001.npz`` and
  ``gts/3DBox_CT_0001.npz``). These are referenced in place: the data root is ``src``.
* training-style ``.npz`` holding ``imgs`` *and* ``gts``, or inputs without ``boxes``: these are
  split/completed into ``data_out`` (inputs must never carry ground truth).
* NIfTI (``.nii``/``.nii.gz``) images with label maps — nnU-Net layout (``imagesTs/x_0000.nii.gz``
  + ``labelsTs/x.nii.gz``), or ``images/``+``labels/``, or ``x.nii.gz`` + ``x_seg.nii.gz``. They are
  converted into challenge ``.npz`` in ``data_out``: arrays transposed from NIfTI ``(x, y, z)`` to
  ``(z, y, x)``, spacing from the header zooms reversed, intensities mapped to 0–255 (CT through a
  soft-tissue window, others by the 0.5–99.5 percentiles), labels renumbered ``1..K`` if needed.

When anything had to be written, every case (converted or not) is placed under ``data_out`` so the
manifest has a single data root.

Spacing: the 2024 preprocessing stored ``spacing`` as ``(x, y, z)`` for ``(z, y, x)`` arrays. With
``spacing_order="auto"`` a stored ``(a, a, b)`` (equal first two values) is read as ``(x, y, z)``
and reversed; ``(b, a, a)`` is already array order and kept; isotropic is kept; anything else is
ambiguous and read as ``(x, y, z)`` (the 2024 convention). Every decision is written to the
manifest's ``notes``. ``"xyz"`` or ``"zyx"`` forces the reading.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._npz import npz_keys, read_npz, write_npz
from .manifest import boxes_from_labels, build_case, finalize_cases, label_voxels, write_manifest
from .points import label_points
from .schema import TestSetManifest

__all__ = ["ImportResult", "import_dir", "infer_modality", "to_array_order"]

_ALIASES = {
    "ct": "CT", "mr": "MR", "mri": "MR", "pet": "PET", "us": "US", "ultrasound": "US", "ultra": "US",
    "x-ray": "X-Ray", "xray": "X-Ray", "cxr": "X-Ray", "xr": "X-Ray", "dx": "X-Ray",
    "endoscopy": "Endoscopy", "endoscope": "Endoscopy", "fundus": "Fundus",
    "microscopy": "Microscopy", "microscope": "Microscopy", "oct": "OCT",
    "dermoscopy": "Dermoscopy", "dermoscope": "Dermoscopy", "mammography": "Mammography",
    "mammo": "Mammography", "mamm": "Mammography", "mg": "Mammography",
}
_ID_RE = re.compile(r"^([23])DBox_([A-Za-z0-9-]+)_(.+)$")


@dataclass
class ImportResult:
    """The manifest, the data root it refers to, skipped files with reasons, and notes."""

    manifest: TestSetManifest | None
    data_root: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def infer_modality(name: str) -> tuple[int | None, str | None]:
    """(dim, modality) from a file name: ``3DBox_CT_0001`` → (3, "CT"); ``x_mri_t1`` → (None, "MR")."""
    m = _ID_RE.match(name)
    if m:
        return int(m.group(1)), _ALIASES.get(m.group(2).lower(), None)
    for tok in re.split(r"[^A-Za-z0-9-]+", name):
        mod = _ALIASES.get(tok.lower())
        if mod:
            return None, mod
    low = name.lower()
    for key in sorted(_ALIASES, key=len, reverse=True):
        if len(key) > 3 and key in low:
            return None, _ALIASES[key]
    return None, None


def to_array_order(stored: Any, order: str = "auto") -> tuple[list[float], str]:
    """Spacing of a ``(z, y, x)`` array from a stored 3-vector; returns (spacing, what was done)."""
    s = [float(v) for v in np.asarray(stored, dtype=np.float64).ravel()]
    if len(s) != 3:
        raise ValueError(f"3D spacing must have 3 values, got {s}")

    def fmt(v: list[float]) -> str:
        return "(" + ", ".join(f"{x:g}" for x in v) + ")"

    if order == "zyx":
        return s, f"{fmt(s)} taken as (z, y, x) as requested"
    if order == "xyz":
        return s[::-1], f"{fmt(s)} read as (x, y, z) as requested → {fmt(s[::-1])}"

    def close(a: float, b: float) -> bool:
        return abs(a - b) <= 1e-6 * max(abs(a), abs(b), 1.0)

    if close(s[0], s[1]) and close(s[1], s[2]):
        return s, f"{fmt(s)} isotropic, kept"
    if close(s[0], s[1]):
        return s[::-1], f"{fmt(s)} read as (x, y, z) (2024 convention, equal in-plane values first) → {fmt(s[::-1])}"
    if close(s[1], s[2]):
        return s, f"{fmt(s)} already (z, y, x) (equal in-plane values last), kept"
    return s[::-1], f"{fmt(s)} ambiguous, read as (x, y, z) (2024 convention) → {fmt(s[::-1])}"


def _image_dim(imgs: np.ndarray) -> int | None:
    if imgs.ndim == 2 or (imgs.ndim == 3 and imgs.shape[-1] in (3, 4) and imgs.shape[0] > 4):
        return 2
    if imgs.ndim == 3:
        return 3
    return None


def _to_uint8(a: np.ndarray, modality: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.dtype == np.uint8:
        return a
    if modality == "CT":
        lo, hi = 40 - 200, 40 + 200
    else:
        lo, hi = np.percentile(a, (0.5, 99.5))
    return np.clip(np.rint((a - lo) / max(hi - lo, 1e-6) * 255), 0, 255).astype(np.uint8)


def _relabel(gts: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    vals = [int(v) for v in np.unique(gts) if v != 0]
    mapping = {v: i for i, v in enumerate(vals, start=1)}
    if all(k == v for k, v in mapping.items()):
        return gts, {}
    out = np.zeros(gts.shape, dtype=np.uint16 if len(vals) > 255 else np.uint8)
    for v, i in mapping.items():
        out[gts == v] = i
    return out, mapping


def _nifti_pairs(files: list[Path]) -> tuple[list[tuple[str, Path, Path]], list[tuple[str, str]]]:
    def stem(p: Path) -> str:
        return re.sub(r"\.nii(\.gz)?$", "", p.name)

    def is_label(p: Path) -> bool:
        return bool(re.search(r"(^|/)(labels\w*|masks?\w*|gts?\w*|segmentations?)/", p.as_posix().lower())) \
            or bool(re.search(r"[_-](seg|label|labels|mask|gt)$", stem(p).lower()))

    labels = {}
    for p in files:
        if is_label(p):
            labels[re.sub(r"[_-](seg|label|labels|mask|gt)$", "", stem(p), flags=re.I)] = p
    pairs, skipped, used = [], [], set()
    for p in files:
        if is_label(p):
            continue
        key = re.sub(r"_0000$", "", stem(p))
        lab = labels.get(key)
        if lab is None:
            skipped.append((str(p), "NIfTI image without a label map (expected labels*/NAME.nii.gz or NAME_seg.nii.gz)"))
            continue
        used.add(lab)
        pairs.append((key, p, lab))
    for lab in labels.values():
        if lab not in used:
            skipped.append((str(lab), "label map without an image"))
    return pairs, skipped


def _classify_npz(src: Path, data_out: Path, skipped: list[tuple[str, str]]
                  ) -> tuple[dict[str, Path], dict[str, Path], dict[str, Path]]:
    """Sort the ``.npz`` files under ``src`` into inputs, ground truths and combined (training-style) files."""
    inputs: dict[str, Path] = {}
    gts: dict[str, Path] = {}
    combined: dict[str, Path] = {}
    for p in sorted(src.rglob("*.npz")):
        if data_out in p.parents:
            continue
        try:
            keys = set(npz_keys(p))
        except Exception as exc:
            skipped.append((str(p), f"not a readable .npz ({exc.__class__.__name__}: {exc})"))
            continue
        name = p.stem
        target = combined if {"imgs", "gts"} <= keys else inputs if "imgs" in keys else gts if "gts" in keys else None
        if target is None:
            skipped.append((str(p), f"has neither imgs nor gts (keys: {', '.join(sorted(keys)) or 'none'})"))
            continue
        if name in target:
            skipped.append((str(p), f"duplicate case name {name} (also {target[name]})"))
            continue
        target[name] = p

    return inputs, gts, combined


def import_dir(src: str | os.PathLike[str], out_manifest: str | os.PathLike[str], *,
               data_out: str | os.PathLike[str] | None = None,
               spacing_order: str = "auto", modality: str | None = None, set_id: str | None = None,
               description: str | None = None) -> ImportResult:
    """Build a manifest for the cases under ``src`` and write it to ``out_manifest``."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a directory")
    if spacing_order not in ("auto", "xyz", "zyx"):
        raise ValueError("spacing_order must be auto, xyz or zyx")
    out_manifest = Path(out_manifest)
    data_out = Path(data_out) if data_out else out_manifest.parent / f"{out_manifest.stem}_data"
    skipped: list[tuple[str, str]] = []
    notes: list[str] = []

    inputs, gts, combined = _classify_npz(src, data_out, skipped)

    # each job: (case name, loader) where loader returns (imgs, boxes|None, gts, stored spacing|None, source note)
    jobs: list[tuple[str, dict[str, Any]]] = []
    for name, p in inputs.items():
        if name in gts:
            jobs.append((name, {"kind": "pair", "input": p, "gt": gts[name]}))
        else:
            skipped.append((str(p), "input without a ground-truth file of the same name (gts/NAME.npz)"))
    for name, p in gts.items():
        if name not in inputs and name not in combined:
            skipped.append((str(p), "ground truth without an input file of the same name"))
    for name, p in combined.items():
        if name in inputs:
            skipped.append((str(p), f"{name} exists both as a training file and as an input"))
            continue
        jobs.append((name, {"kind": "combined", "file": p}))
    nii = sorted(list(src.rglob("*.nii")) + list(src.rglob("*.nii.gz")))
    pairs, nskip = _nifti_pairs(nii)
    skipped += nskip
    for key, img, lab in pairs:
        jobs.append((key, {"kind": "nifti", "image": img, "label": lab}))

    write_all = any(j["kind"] != "pair" for _, j in jobs)
    root = data_out if write_all else src
    if write_all:
        notes.append(f"converted or split files were written to {data_out}; every case was placed there")
    cases = []
    for name, job in sorted(jobs, key=lambda j: j[0]):
        origin = str(job.get("input") or job.get("file") or job.get("image"))
        try:
            case, note = _import_one(name, job, root, write_all, spacing_order, modality)
        except _Skip as exc:
            skipped.append((origin, str(exc)))
            continue
        except Exception as exc:
            skipped.append((origin, f"unreadable: {exc.__class__.__name__}: {exc}"))
            continue
        cases.append(case)
        notes.extend(f"{case['id']}: {n}" for n in note)
    manifest = None
    cases.sort(key=lambda c: c["id"])
    if cases:
        manifest = TestSetManifest(
            id=set_id or src.name,
            version="1",
            description=description or f"imported from {src.resolve()}",
            notes=notes + [f"skipped {s}: {r}" for s, r in skipped],
            cases=finalize_cases(cases),
        )
        write_manifest(manifest, out_manifest)
    return ImportResult(manifest, root, skipped, notes)


class _Skip(Exception):
    pass


def _import_nifti(name: str, job: dict[str, Any], root: Path, modality_override: str | None,
                  notes: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Convert one NIfTI image/label pair ((x, y, z) arrays) into a case in array order."""
    import nibabel as nib

    im: Any = nib.load(str(job["image"]))
    lb: Any = nib.load(str(job["label"]))
    a = np.asanyarray(im.dataobj)
    g = np.rint(np.asanyarray(lb.dataobj)).astype(np.int64)
    if a.shape[:3] != g.shape[:3]:
        raise _Skip(f"image shape {a.shape} and label shape {g.shape} differ")
    zooms = [float(z) for z in im.header.get_zooms()[:3]]
    a, g = np.squeeze(a), np.squeeze(g)
    if a.ndim == 3:
        imgs0, gts = a.transpose(2, 1, 0), g.transpose(2, 1, 0)
        stored = zooms[:3]
        spacing_order_local = "xyz"
    elif a.ndim == 2:
        imgs0, gts = a.T, g.T
        stored = None
        spacing_order_local = None
    else:
        raise _Skip(f"NIfTI with {a.ndim} dimensions after squeezing is not supported")
    _, mod = infer_modality(name)
    mod = modality_override or mod
    if mod is None:
        raise _Skip("cannot infer the modality from the name; pass --modality")
    imgs = _to_uint8(imgs0, mod)
    gts, mapping = _relabel(gts)
    if mapping:
        notes.append(f"labels renumbered {mapping}")
    boxes = None
    notes.append("converted from NIfTI: (x, y, z) arrays transposed to (z, y, x)")
    dim = imgs.ndim
    name = f"{dim}DBox_{mod}_{re.sub(r'[^A-Za-z0-9_.-]', '-', name)}"
    if spacing_order_local:
        spacing, how = to_array_order(stored, "xyz")
        notes.append(f"spacing from the header zooms {how}")
    else:
        spacing = [1.0, 1.0]
    return _finish(name, mod, imgs, boxes, gts, spacing, root, job, True, notes, nifti=True)


def _import_one(name: str, job: dict[str, Any], root: Path, write_all: bool, spacing_order: str,
                modality_override: str | None) -> tuple[dict[str, Any], list[str]]:
    notes: list[str] = []
    if job["kind"] == "pair":
        inp = read_npz(job["input"])
        gt = read_npz(job["gt"])
        imgs, boxes, gts = inp["imgs"], inp.get("boxes"), gt["gts"]
        stored = inp.get("spacing", gt.get("spacing"))
        if "spacing" in inp and "spacing" in gt and not np.allclose(inp["spacing"], gt["spacing"]):
            notes.append("input and ground-truth spacing differ; the input's was used")
    elif job["kind"] == "combined":
        d = read_npz(job["file"])
        imgs, boxes, gts, stored = d["imgs"], None, d["gts"], d.get("spacing")
        notes.append("training-style file split into input and ground truth; boxes derived from gts")
    else:
        return _import_nifti(name, job, root, modality_override, notes)
    dim_hint, mod = infer_modality(name)
    mod = modality_override or mod
    if not _ID_RE.match(name):
        raise _Skip("file name must be 2DBox_<MOD>_<id>.npz or 3DBox_<MOD>_<id>.npz (containers rely on it)")
    if mod is None:
        raise _Skip(f"unknown modality in {name!r}; pass --modality")
    dim = _image_dim(imgs)
    if dim is None:
        raise _Skip(f"imgs has shape {imgs.shape}, neither (H,W), (H,W,3) nor (D,H,W)")
    if dim_hint is not None and dim_hint != dim:
        raise _Skip(f"name says {dim_hint}D but imgs has shape {imgs.shape}")
    spatial = imgs.shape if dim == 3 else imgs.shape[:2]
    if gts.shape != spatial:
        raise _Skip(f"gts shape {gts.shape} does not match the image's spatial shape {spatial}")
    if dim == 3:
        if stored is None:
            raise _Skip("3D case without spacing (neither input nor ground truth has it)")
        spacing, how = to_array_order(stored, spacing_order)
        notes.append(f"spacing {how}")
    else:
        spacing = [1.0, 1.0]
    return _finish(name, mod, imgs, boxes, gts, spacing, root, job, write_all, notes, nifti=False)


def _finish(name: str, mod: str, imgs: np.ndarray, boxes: Any, gts: np.ndarray, spacing: list[float], root: Path,
            job: dict[str, Any], write_all: bool, notes: list[str],
            nifti: bool = False) -> tuple[dict[str, Any], list[str]]:
    k = int(gts.max())
    if k < 1:
        raise _Skip("ground truth has no labelled voxels")
    voxels = label_voxels(gts, k)
    empty = [i for i, v in enumerate(voxels, start=1) if v == 0]
    if empty:
        notes.append(f"labels {empty} are empty in the ground truth (the reference scorer gives NaN for them)")
    width = 4 if gts.ndim == 2 else 6
    if boxes is not None:
        boxes = np.asarray(boxes)
        if boxes.ndim != 2 or boxes.shape[1] != width:
            raise _Skip(f"boxes has shape {boxes.shape}; expected (K, {width})")
        if boxes.shape[0] != k:
            notes.append(f"{boxes.shape[0]} boxes for {k} labels")
    if write_all:
        inp_rel, gt_rel = f"inputs/{name}.npz", f"gts/{name}.npz"
        if job["kind"] == "pair":
            for s, d in ((job["input"], root / inp_rel), (job["gt"], root / gt_rel)):
                d.parent.mkdir(parents=True, exist_ok=True)
                if not d.exists():
                    shutil.copyfile(s, d)
        else:
            if empty:
                raise _Skip(f"labels {empty} are empty; cannot derive their boxes")
            boxes = boxes_from_labels(gts, k)
            sp = np.asarray(spacing, dtype=np.float64)
            inp = {"imgs": imgs, "boxes": boxes}
            if gts.ndim == 3:
                inp["spacing"] = sp
                notes.append("spacing written to the new files in array-axis order (z, y, x)")
            write_npz(root / inp_rel, **inp)
            write_npz(root / gt_rel, gts=gts, spacing=sp)
    else:
        inp_rel = job["input"].resolve().relative_to(root.resolve()).as_posix()
        gt_rel = job["gt"].resolve().relative_to(root.resolve()).as_posix()
    names = [f"label {i}" for i in range(1, k + 1)]
    case = build_case(case_id=name, modality=mod, data_root=root, input_path=inp_rel, gt_path=gt_rel,
                      shape=list(gts.shape), spacing=list(spacing), names=names, voxels=voxels,
                      points=label_points(gts, k, list(spacing)))
    return case, notes
