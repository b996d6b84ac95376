"""Dice and normalized surface distance (surface Dice at tolerance) for 2D and 3D masks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._surface import SurfaceOverlap, bounding_box, surface_overlap

__all__ = ["dice", "nsd", "surface_overlap_of", "check_spacing"]


def _as_mask(name: str, values: ArrayLike) -> np.ndarray:
    a = np.asarray(values)
    if a.dtype != bool:
        if not (np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"{name} must be a boolean (or integer 0/1) array, got dtype {a.dtype}")
        a = a != 0
    return a


def _check_pair(gt: ArrayLike, pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    gt = _as_mask("gt", gt)
    pred = _as_mask("pred", pred)
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred must have the same shape, got {gt.shape} and {pred.shape}")
    if gt.ndim not in (2, 3):
        raise ValueError(f"masks must be 2D or 3D, got {gt.ndim}D of shape {gt.shape}")
    return gt, pred


def check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    """Spacing as a float64 tuple in array-axis order; raises ``ValueError`` when unusable."""
    s = np.asarray(spacing, dtype=np.float64).ravel()
    if s.size != ndim:
        raise ValueError(f"spacing must have {ndim} values (one per array axis), got {s.size}: {list(s)}")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"spacing values must be positive and finite, got {list(s)}")
    return tuple(float(v) for v in s)


def _union_crop(gt: np.ndarray, pred: np.ndarray) -> tuple[tuple[slice, ...] | None, Any, Any]:
    bg, bp = bounding_box(gt), bounding_box(pred)
    if bg is None and bp is None:
        return None, bg, bp
    boxes = [b for b in (bg, bp) if b is not None]
    lo = [min(b[0][k] for b in boxes) for k in range(gt.ndim)]
    hi = [max(b[1][k] for b in boxes) for k in range(gt.ndim)]
    return tuple(slice(a, b + 1) for a, b in zip(lo, hi)), bg, bp


def dice(gt: ArrayLike, pred: ArrayLike) -> float:
    """Sørensen–Dice coefficient ``2|G∩P| / (|G| + |P|)`` of two boolean masks.

    Parameters
    ----------
    gt, pred : array_like of bool, 2D or 3D, equal shape
        Integer arrays are read as ``!= 0``.

    Returns
    -------
    float
        In [0, 1]; NaN when both masks are empty (the class is absent from both).
    """
    gt, pred = _check_pair(gt, pred)
    crop, bg, bp = _union_crop(gt, pred)
    if crop is None:
        return math.nan
    if bg is None or bp is None:
        return 0.0
    g, p = gt[crop], pred[crop]
    inter = int(np.count_nonzero(g & p))
    total = int(np.count_nonzero(g)) + int(np.count_nonzero(p))
    return 2 * inter / total


def surface_overlap_of(gt: ArrayLike, pred: ArrayLike, spacing: Sequence[float], tolerance: float) -> SurfaceOverlap:
    """Surfel-area sums behind :func:`nsd` (gt side, pred side, each within tolerance)."""
    gt, pred = _check_pair(gt, pred)
    spacing = check_spacing(spacing, gt.ndim)
    tol = float(tolerance)
    if not math.isfinite(tol) or tol < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    crop, _, _ = _union_crop(gt, pred)
    if crop is None:
        return SurfaceOverlap(0.0, 0.0, 0.0, 0.0)
    return surface_overlap(gt[crop], pred[crop], spacing, tol)


def nsd(gt: ArrayLike, pred: ArrayLike, spacing: Sequence[float], tolerance: float) -> float:
    """Normalized surface distance: the surface Dice at ``tolerance``.

    Identical in definition to
    ``surface_distance.compute_surface_dice_at_tolerance(
    surface_distance.compute_surface_distances(gt, pred, spacing), tolerance)``:
    surface elements from the 2x2(x2) neighbour codes (true 2D contours for 2D input),
    weighted by their area (length in 2D), a surface element counts when its distance
    to the other surface is ``<= tolerance`` (inclusive).

    Parameters
    ----------
    gt, pred : array_like of bool, 2D or 3D, equal shape
    spacing : sequence of float
        Voxel size per array axis, in physical units (mm).
    tolerance : float
        In the units of ``spacing``.

    Returns
    -------
    float
        In [0, 1]. NaN when both masks are empty; 0.0 when exactly one is empty (the
        reference package crashes there on NumPy 2 or returns 0 once fixed).
    """
    ov = surface_overlap_of(gt, pred, spacing, tolerance)
    if ov.area_a == 0.0 and ov.area_b == 0.0:
        return math.nan
    return ov.nsd
