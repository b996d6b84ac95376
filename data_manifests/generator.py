"""``generate``: write a synthetic test set in the challenge's exact file format, plus its manifest.

Layout of the data root ``out``::

    inputs/<id>.npz   imgs (uint8), boxes (int64) and, for 3D, spacing  — what a container sees
    gts/<id>.npz      gts (uint8 label map), spacing                    — never mounted
    manifest.json

``<id>`` is ``2DBox_<MOD>_<NNNN>`` or ``3DBox_<MOD>_<NNNN>``. Images: 3D ``(D, H, W)`` for CT, MR
and PET; 2D RGB ``(H, W, 3)`` for Endoscopy, Fundus, Microscopy and Dermoscopy; 2D grayscale
``(H, W)`` for US, X-Ray, OCT and Mammography (``gray_as_rgb`` stores those as ``(H, W, 3)``
too, as the 2024 files were). Boxes: label ``i`` answers box ``i``; 2D
``[x_min, y_min, x_max, y_max]``, 3D ``[x_min, y_min, z_min, x_max, y_max, z_max]``, inclusive
pixel indices (``np.min``/``np.max`` of the label's coordinates), 3D boxes span every slice of the
structure. ``spacing`` is stored in **array-axis order** ``(sz, sy, sx)`` in mm — the reverse of the
2024 files' ``(x, y, z)``. 2D cases use pixel units ``(1, 1)``, as the challenge scored 2D.

Every case is drawn from its own ``np.random.default_rng([seed, modality index, case number])``
and files are written with fixed zip timestamps, so the same ``(size, seed)`` gives the same bytes.

That is also why a set's ground truth is only as secret as its seed: the manifest records
``generator.public_seed`` (:func:`data_manifests.schema.is_public_seed`: the built-in sets' seed 0
and every seed below 2**32, which anyone can enumerate), and a challenge that is not a demo refuses
such a set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._npz import write_npz
from .manifest import boxes_from_labels, build_case, finalize_cases, label_voxels, write_manifest
from .points import label_points
from .schema import MODALITIES, GeneratorInfo, TestSetManifest, is_public_seed
from .synth import DIM, synthesize

__all__ = ["GENERATOR_VERSION", "SIZES", "SizeSpec", "generate", "case_id"]

#: Bump when the generator's output changes; committed manifests record it.
GENERATOR_VERSION = "1.0"

NINE = MODALITIES[:9]


@dataclass(frozen=True)
class SizeSpec:
    """How many cases of which modalities, at which spatial shapes."""

    modalities: tuple[str, ...]
    per_modality: int
    shapes: dict[str, tuple[int, ...]]
    description: str


_2D_SQ = ("US", "X-Ray", "Endoscopy", "Fundus", "Microscopy", "Dermoscopy")

_TINY_SHAPES: dict[str, tuple[int, ...]] = {
    "CT": (32, 128, 128), "MR": (28, 112, 112), "PET": (32, 96, 96), "OCT": (224, 320), "Mammography": (256, 208),
    **{m: (256, 256) for m in _2D_SQ}}

SIZES: dict[str, SizeSpec] = {
    # micro: tiny's first case of each modality, byte for byte (same seeds and shapes) — the smallest set that
    # still has every final-test modality, 2D and 3D: smoke runs and tests
    "micro": SizeSpec(NINE, 1, _TINY_SHAPES, "every final-test modality, 1 case each, small images (smoke tests)"),
    "tiny": SizeSpec(
        NINE, 3, _TINY_SHAPES,
        "every final-test modality, 3 cases each, small images (CI)",
    ),
    "small": SizeSpec(
        MODALITIES, 5,
        {"CT": (48, 160, 160), "MR": (40, 144, 144), "PET": (40, 112, 112), "OCT": (320, 448),
         "Mammography": (384, 304), **{m: (384, 384) for m in _2D_SQ}},
        "the nine final-test modalities plus Dermoscopy and Mammography, 5 cases each (demos)",
    ),
    # The challenge's hidden test set had on the order of a few thousand cases over nine
    # modalities at native resolution; "full" matches that order: 11 × 200 = 2,200 cases,
    # CT 512×512 in-plane. Several GB and tens of minutes: never generated in tests.
    "full": SizeSpec(
        MODALITIES, 200,
        {"CT": (120, 512, 512), "MR": (96, 256, 256), "PET": (160, 192, 192), "OCT": (496, 768),
         "Mammography": (1024, 832), "US": (512, 512), "X-Ray": (1024, 1024), "Endoscopy": (480, 560),
         "Fundus": (1024, 1024), "Microscopy": (1024, 1024), "Dermoscopy": (1024, 1024)},
        "challenge-sized: 11 modalities × 200 cases at native resolutions",
    ),
}


def case_id(modality: str, number: int) -> str:
    """``2DBox_US_0001`` style id of case ``number`` (1-based) of ``modality``."""
    return f"{DIM[modality]}DBox_{modality}_{number:04d}"


def generate(size: str, seed: int, out: str | os.PathLike[str], *, box_jitter: int = 0,
             gray_as_rgb: bool = False) -> TestSetManifest:
    """Generate the synthetic set ``size`` with ``seed`` into ``out``; return its manifest.

    Writes ``out/inputs/*.npz``, ``out/gts/*.npz`` and ``out/manifest.json``.
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    if seed < 0:
        raise ValueError("seed must be >= 0")
    spec = SIZES[size]
    root = Path(out)
    (root / "inputs").mkdir(parents=True, exist_ok=True)
    (root / "gts").mkdir(parents=True, exist_ok=True)
    cases = []
    for modality in spec.modalities:
        mi = MODALITIES.index(modality)
        for n in range(1, spec.per_modality + 1):
            rng = np.random.default_rng([seed, mi, n])
            c = synthesize(modality, rng, spec.shapes[modality])
            cid = case_id(modality, n)
            boxes = boxes_from_labels(c.labels, len(c.names), jitter=box_jitter, rng=rng)
            spacing = np.asarray(c.spacing, dtype=np.float64)
            img = c.image
            if gray_as_rgb and DIM[modality] == 2 and img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=-1)
            inp = {"imgs": img, "boxes": boxes}
            if DIM[modality] == 3:
                inp["spacing"] = spacing
            write_npz(root / "inputs" / f"{cid}.npz", **inp)
            write_npz(root / "gts" / f"{cid}.npz", gts=c.labels, spacing=spacing)
            cases.append(build_case(
                case_id=cid, modality=modality, data_root=root,
                input_path=f"inputs/{cid}.npz", gt_path=f"gts/{cid}.npz",
                shape=list(c.labels.shape), spacing=list(c.spacing), names=c.names,
                voxels=label_voxels(c.labels, len(c.names)),
                points=label_points(c.labels, len(c.names), list(c.spacing)),
            ))
    public = is_public_seed(seed)
    # a private seed appears only in the generator record (server side), never in the id, version or description
    tag = f"seed {seed}" if public else "private seed"
    manifest = TestSetManifest(
        id=f"synthetic-{size}" + ((f"-seed{seed}" if seed else "") if public else "-private"),
        version=f"{GENERATOR_VERSION}+" + (f"seed{seed}" if public else "private"),
        description=f"SegArena synthetic test set '{size}' ({tag}): {spec.description}. "
                    "Spacing in array-axis order (z, y, x) mm; 2D in pixel units.",
        generator=GeneratorInfo(version=GENERATOR_VERSION, size=size, seed=seed, public_seed=public,
                                box_jitter=box_jitter, gray_as_rgb=gray_as_rgb),
        cases=finalize_cases(cases),
    )
    write_manifest(manifest, root / "manifest.json")
    return manifest
