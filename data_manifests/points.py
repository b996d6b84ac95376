"""Point prompts: per structure, the voxel farthest from its border, stored in the manifest (``LabelInfo.point``).

Rule (the same as ``evaluator.interactive.interior_point``, which scores and clicks; the two packages import no
other project package, so each holds its copy and a test checks they agree): the Euclidean distance transform of the
structure's mask on the case's spacing (array-axis order), computed on its bounding box padded with zeros by a
quarter of its size (at least one voxel) so that the outside of the image counts as outside; the point is the voxel
of maximal distance; ties -> the maxima in C order, ``numpy.random.RandomState(42).choice`` (the CVPR 2025
reference's tie break). Coordinates are array indices: ``[z, y, x]`` for a ``(D, H, W)`` volume, ``[y, x]`` in 2D.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

__all__ = ["interior_point", "label_points"]


def interior_point(mask: npt.ArrayLike, spacing: Sequence[float] | None = None) -> list[int]:
    """The voxel of non-empty ``mask`` farthest from its border (see the module docstring), array-index order."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim not in (2, 3):
        raise ValueError(f"mask must be 2D or 3D, got shape {m.shape}")
    idx = np.argwhere(m)
    if idx.size == 0:
        raise ValueError("the structure is empty: it has no interior point")
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    crop = hi - lo
    pad = np.maximum((crop * 0.25).astype(int), 1)
    padded = np.zeros(tuple(int(v) for v in crop + 2 * pad), dtype=np.uint8)
    inner = tuple(slice(int(p), int(p) + int(n)) for p, n in zip(pad, crop, strict=True))
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    padded[inner] = m[box]
    sampling = None
    if spacing is not None:
        s = np.asarray(spacing, dtype=np.float64).ravel()
        if s.size != m.ndim or not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ValueError(f"spacing must be {m.ndim} positive values in array-axis order, got {list(s)}")
        sampling = tuple(float(v) for v in s)
    dist = np.asarray(ndimage.distance_transform_edt(padded, sampling=sampling), dtype=np.float64)[inner] * m[box]
    best = np.argwhere(dist == dist.max())
    pick = best[int(np.random.RandomState(42).choice(len(best)))]
    return [int(v) + int(a) for v, a in zip(pick, lo, strict=True)]


def label_points(labels: npt.ArrayLike, n_labels: int, spacing: Sequence[float] | None = None) -> list[list[int] | None]:
    """The point of each label ``1..n_labels`` of a label map (``None`` for a label with no voxel)."""
    a = np.asarray(labels)
    out: list[list[int] | None] = []
    for i in range(1, n_labels + 1):
        m = a == i
        out.append(interior_point(m, spacing) if m.any() else None)
    return out
