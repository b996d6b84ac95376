"""Generated interactive cases for the comparison with the CVPR 2025 reference (``CVPR25_iter_eval.py``).

The 3D cases of the synthetic ``tiny`` set for a few seeds, each with K + 1 = 6 predictions drawn by
:func:`predictions` (deterministic: ``np.random.default_rng`` of the case's index and the iteration). The
perturbations make every situation of the click rule happen: missed and extra regions (fg / bg clicks),
box-shaped errors (ties among the EDT maxima), equal-size error components, classes already perfect (no click),
float and negative-valued outputs. ``bench/cvpr25_reference.py`` runs the reference on these and records its
clicks and numbers in ``tests/evaluator/fixtures/cvpr25_reference.json``; the test recomputes them with
``evaluator.interactive`` and compares exactly. Nothing of the reference is vendored.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from scipy import ndimage

#: Seeds of the ``tiny`` sets used (27 3D cases for the committed fixture); SEGARENA_CVPR25_SEEDS="0,1,...,8" for a
#: larger one-off comparison (bench/cvpr25_reference.py --out elsewhere, then SEGARENA_CVPR25_FIXTURE=that file).
SEEDS = tuple(int(v) for v in os.environ.get("SEGARENA_CVPR25_SEEDS", "0,1,2").split(","))
ITERATIONS = 5


def sha256(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha256(str((a.dtype.str, a.shape)).encode() + a.tobytes()).hexdigest()


def cases(root: Path) -> Iterator[tuple[str, dict[str, np.ndarray], np.ndarray]]:
    """(name, input arrays, gts) of every 3D case of ``tiny`` for :data:`SEEDS`, generated under ``root``."""
    from data_manifests import generate

    for seed in SEEDS:
        out = Path(root) / f"tiny-{seed}"
        if not (out / "manifest.json").exists():
            generate("tiny", seed, out)
        for inp in sorted((out / "inputs").glob("3DBox_*.npz")):
            with np.load(inp) as f:
                arrays = {k: f[k] for k in f.files}
            with np.load(out / "gts" / inp.name) as f:
                gts = f["gts"]
            yield f"s{seed}_{inp.name}", arrays, gts


def _box(rng: np.random.Generator, shape: tuple[int, ...], mask: np.ndarray | None, size: int) -> tuple[slice, ...]:
    """A box of side ``size`` centred on a voxel of ``mask`` (anywhere when None / empty), clipped to the volume."""
    if mask is not None and mask.any():
        pts = np.argwhere(mask)
        c = pts[int(rng.integers(len(pts)))]
    else:
        c = np.array([int(rng.integers(n)) for n in shape])
    return tuple(slice(max(0, int(v) - size // 2), min(n, int(v) - size // 2 + size)) for v, n in zip(c, shape))


def predictions(index: int, gts: np.ndarray) -> list[np.ndarray]:
    """The K + 1 outputs the fake container writes for case number ``index`` (iterations 0..K)."""
    labels = [int(v) for v in np.unique(gts) if v > 0]
    out: list[np.ndarray] = []
    for it in range(ITERATIONS + 1):
        rng = np.random.default_rng([index, it, 2025])
        p = gts.astype(np.int16).copy()
        n_bad = max(0, 3 - it // 2) if labels else 0
        bad = list(rng.choice(labels, size=min(n_bad, len(labels)), replace=False)) if n_bad else []
        for lab in bad:
            m = gts == lab
            kind = int(rng.integers(5))
            if kind == 0:  # missed cube inside the structure (fg click, EDT ties)
                p[_box(rng, gts.shape, m, int(rng.integers(2, 7)))] = 0
            elif kind == 1:  # eroded structure
                er = ndimage.binary_erosion(m, iterations=int(rng.integers(1, 3)))
                p[m & ~er] = 0
            elif kind == 2:  # dilated structure (bg click)
                di = ndimage.binary_dilation(m, iterations=int(rng.integers(1, 3)))
                p[di & (gts == 0)] = lab
            elif kind == 3:  # two equal-size false-positive cubes far apart (component tie)
                s = int(rng.integers(2, 5))
                for _ in range(2):
                    p[_box(rng, gts.shape, gts == 0, s)] = lab
            else:  # structure shifted by one voxel along a random axis
                ax = int(rng.integers(gts.ndim))
                sh = np.roll(m, int(rng.choice([-1, 1])), axis=ax)
                p[m & ~sh] = 0
                p[sh & (gts == 0)] = lab
        if it == 0 and index % 4 == 1 and labels:  # a structure missed entirely at the box iteration
            p[gts == labels[-1]] = 0
        if index % 7 == 3:  # float output, some values not integral
            f = p.astype(np.float32)
            f[_box(rng, gts.shape, None, 3)] = 0.5
            out.append(f)
        elif index % 7 == 5:  # negative labels in the output
            q = p.copy()
            q[_box(rng, gts.shape, gts == 0, 3)] = -1
            out.append(q)
        else:
            out.append(p.astype(np.uint8))
    return out
