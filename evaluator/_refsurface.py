"""Surface Dice computed with the same floating-point operations as the challenges' ``SurfaceDice.py`` (DeepMind's
surface-distance definition as the 2024 and 2025 reference scripts ship it), for profiles whose numbers are compared
unrounded (``cvpr25``).

SegArena's own NSD (:mod:`evaluator._surface`) is exact but sums the surfel areas in another order, which can move
the last bit of the result. Here the steps are those of the reference, so every float is the same:

* surfel areas per 2x2x2 neighbour code: for each marching-cubes normal ``(nx * s1 * s2, ny * s0 * s2, nz * s0 * s1)``,
  its ``np.linalg.norm``, accumulated in order;
* both masks cropped to the bounding box of their union plus one zero layer after it; neighbour codes by
  ``scipy.ndimage.correlate`` with the kernel ``[[[128, 64], [32, 16]], [[8, 4], [2, 1]]]`` (constant 0 outside);
  border voxels = codes other than 0 and 255;
* distances: ``scipy.ndimage.distance_transform_edt`` of the other mask's non-border voxels on the spacing;
* the (distance, area) pairs of each side sorted ascending (distance first, then area), the areas within the
  tolerance summed with ``np.sum`` in that order, divided by the sum of all areas of both sides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from ._normals import NEIGHBOUR_CODE_TO_NORMALS

__all__ = ["reference_surface_dice"]

_KERNEL = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]])


@lru_cache(maxsize=64)
def _area_table(spacing: tuple[float, float, float]) -> npt.NDArray[np.float64]:
    s = [np.float64(v) for v in spacing]
    table = np.zeros([256])
    for code in range(256):
        normals = np.array(NEIGHBOUR_CODE_TO_NORMALS[code])
        total: float = 0
        for i in range(normals.shape[0]):
            n = np.zeros([3])
            n[0] = normals[i, 0] * s[1] * s[2]
            n[1] = normals[i, 1] * s[0] * s[2]
            n[2] = normals[i, 2] * s[0] * s[1]
            total += float(np.linalg.norm(n))
        table[code] = total
    return table


def _side(codes: npt.NDArray[np.uint8], border: npt.NDArray[np.bool_], other_dist: npt.NDArray[np.float64],
          table: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    dist = other_dist[border]
    area = table[codes][border]
    if dist.size:
        order = np.lexsort((area, dist))  # sorted by distance, then area: the reference's sorted(zip(d, a))
        dist, area = dist[order], area[order]
    return dist, area


def reference_surface_dice(mask_gt: npt.ArrayLike, mask_pred: npt.ArrayLike, spacing: Sequence[float],
                           tolerance: float) -> float:
    """Surface Dice at ``tolerance`` of two 3D boolean masks, bit-identical to the reference's
    ``compute_surface_dice_at_tolerance(compute_surface_distances(gt, pred, spacing), tolerance)``."""
    from scipy import ndimage  # here, not at import: the API imports this package and never needs it

    gt = np.asarray(mask_gt, dtype=bool)
    pred = np.asarray(mask_pred, dtype=bool)
    if gt.ndim != 3 or gt.shape != pred.shape:
        raise ValueError(f"need two 3D masks of one shape, got {gt.shape} and {pred.shape}")
    sp = tuple(float(v) for v in spacing)
    if len(sp) != 3:
        raise ValueError(f"spacing must have 3 values, got {list(spacing)}")
    table = _area_table((sp[0], sp[1], sp[2]))
    union = gt | pred
    if not union.any():
        return math.nan
    lo, hi = [], []
    for ax in range(3):
        w = np.flatnonzero(union.any(axis=tuple(a for a in range(3) if a != ax)))
        lo.append(int(w[0]))
        hi.append(int(w[-1]))
    crop = tuple(slice(a, b + 1) for a, b in zip(lo, hi, strict=True))
    shape = tuple(b - a + 2 for a, b in zip(lo, hi, strict=True))
    maps = []
    for m in (gt, pred):
        c = np.zeros(shape, np.uint8)
        c[:-1, :-1, :-1] = m[crop]
        codes = ndimage.correlate(c, _KERNEL, mode="constant", cval=0)
        border = (codes != 0) & (codes != 255)
        if border.any():
            dist = np.asarray(ndimage.distance_transform_edt(~border, sampling=sp), dtype=np.float64)
        else:
            dist = np.full(shape, np.inf)
        maps.append((codes, border, dist))
    (cg, bg, dg), (cp, bp, dp) = maps
    d_gt, a_gt = _side(cg, bg, dp, table)
    d_pred, a_pred = _side(cp, bp, dg, table)
    overlap_gt = np.sum(a_gt[d_gt <= tolerance])
    overlap_pred = np.sum(a_pred[d_pred <= tolerance])
    with np.errstate(invalid="ignore", divide="ignore"):
        return float((overlap_gt + overlap_pred) / (np.sum(a_gt) + np.sum(a_pred)))
