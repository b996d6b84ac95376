"""Shared building blocks of the synthetic modalities: shapes, fields, noise, intensity mapping."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "SynthCase",
    "grid",
    "smooth_noise",
    "ellipse_field",
    "blob",
    "to_uint8",
    "gauss",
    "stamp_polyline",
    "speckle",
    "paint",
    "finalize_labels",
    "RegenerateCase",
]


class RegenerateCase(Exception):
    """Raised by a modality when a random draw produced an unusable case (e.g. a label vanished)."""


@dataclass
class SynthCase:
    """One generated case before it is written: image, label map, names, spacing."""

    image: np.ndarray          # uint8, (H,W), (H,W,3) or (D,H,W)
    labels: np.ndarray         # uint8, spatial shape
    names: list[str]           # name of label i at index i-1
    spacing: tuple[float, ...]  # array-axis order
    notes: dict[str, Any] = field(default_factory=dict)


def grid(shape: tuple[int, ...], spacing: tuple[float, ...] | None = None, center: bool = True) -> list[np.ndarray]:
    """Open (sparse) coordinate grids in physical units, centred on the image if ``center``."""
    spacing = spacing or (1.0,) * len(shape)
    out = []
    for ax, (n, s) in enumerate(zip(shape, spacing)):
        v = (np.arange(n, dtype=np.float32) - ((n - 1) / 2.0 if center else 0.0)) * np.float32(s)
        sh = [1] * len(shape)
        sh[ax] = n
        out.append(v.reshape(sh))
    return out


def gauss(a: np.ndarray, sigma: Any, **kw: Any) -> np.ndarray:
    """Gaussian filter in float32 with reflect borders."""
    out: np.ndarray = ndimage.gaussian_filter(np.asarray(a, dtype=np.float32), sigma, mode=kw.pop("mode", "reflect"), **kw)
    return out


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: Any, *, octaves: int = 1) -> np.ndarray:
    """Zero-mean, unit-std smooth random field (sum of ``octaves`` Gaussian-filtered white noises).

    Large ``sigma`` is computed on a coarse grid and upsampled, which keeps it cheap.
    """
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (len(shape),))
    total = np.zeros(shape, dtype=np.float32)
    for o in range(octaves):
        s = sig / (2 ** o)
        f = np.maximum(1, np.floor(s / 3.0)).astype(int)
        small = tuple(int(np.ceil(n / k)) + 2 for n, k in zip(shape, f))
        w = rng.standard_normal(small).astype(np.float32)
        w = ndimage.gaussian_filter(w, s / f, mode="wrap")
        if np.any(f > 1):
            w = ndimage.zoom(w, tuple(float(k) for k in f), order=1, mode="nearest", grid_mode=False)
        w = w[tuple(slice(0, n) for n in shape)]
        w = (w - w.mean()) / (w.std() + 1e-6)
        total += w * np.float32(0.5 ** o)
    out: np.ndarray = (total - total.mean()) / (total.std() + 1e-6)
    return out


def ellipse_field(coords: list[np.ndarray], center: Any, radii: Any, angle: float = 0.0) -> np.ndarray:
    """Normalised ellipse/ellipsoid "radius" field: < 1 inside, = 1 on the surface.

    ``angle`` rotates in the plane of the last two axes (radians).
    """
    n = len(coords)
    d = [c - np.float32(m) for c, m in zip(coords, center)]
    if angle:
        ca, sa = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        a, b = d[-2], d[-1]
        d[-2], d[-1] = ca * a - sa * b, sa * a + ca * b
    acc: Any = None
    for k in range(n):
        t = (d[k] / np.float32(radii[k])) ** 2
        acc = t if acc is None else acc + t
    out: np.ndarray = np.sqrt(acc)
    return out


def blob(coords: list[np.ndarray], center: Any, radii: Any, *, angle: float = 0.0, wobble: np.ndarray | None = None,
         amount: float = 0.0) -> np.ndarray:
    """Boolean ellipse/ellipsoid with an optional irregular border (``wobble`` field × ``amount``)."""
    f = ellipse_field(coords, center, radii, angle)
    if wobble is not None and amount:
        f = f + np.float32(amount) * wobble
    return f < 1.0


def stamp_polyline(shape2d: tuple[int, int], pts: np.ndarray, radii: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Rasterise a thick poly-line (points ``(N,2)`` as (y,x), per-point radius) into a float mask."""
    h, w = shape2d
    out = np.zeros(shape2d, dtype=np.float32) if out is None else out
    for (y, x), radius in zip(pts, radii):
        r = float(radius)
        y0, y1 = int(max(0, np.floor(y - r - 1))), int(min(h, np.ceil(y + r + 2)))
        x0, x1 = int(max(0, np.floor(x - r - 1))), int(min(w, np.ceil(x + r + 2)))
        if y0 >= y1 or x0 >= x1:
            continue
        yy = np.arange(y0, y1, dtype=np.float32)[:, None]
        xx = np.arange(x0, x1, dtype=np.float32)[None, :]
        d = np.sqrt((yy - y) ** 2 + (xx - x) ** 2)
        v = np.clip(r + 0.5 - d, 0.0, 1.0)
        np.maximum(out[y0:y1, x0:x1], v, out=out[y0:y1, x0:x1])
    return out


def random_walk(rng: np.random.Generator, start: Any, direction: float, n: int, step: float, turn: float, *,
                bend: float = 0.0) -> np.ndarray:
    """A smooth random curve: ``n`` points of (y, x) from ``start`` heading ``direction`` (rad)."""
    pts = np.empty((n, 2), dtype=np.float64)
    y, x = start
    a = direction
    dturn = 0.0
    for i in range(n):
        pts[i] = (y, x)
        dturn = 0.8 * dturn + rng.normal(0, turn)
        a += dturn + bend
        y += step * np.sin(a)
        x += step * np.cos(a)
    return pts


def speckle(rng: np.random.Generator, shape: tuple[int, ...], sigma: Any = (0.8, 1.6)) -> np.ndarray:
    """Fully developed speckle: magnitude of smoothed complex Gaussian noise, mean ≈ 1 (Rayleigh)."""
    re = gauss(rng.standard_normal(shape).astype(np.float32), sigma)
    im = gauss(rng.standard_normal(shape).astype(np.float32), sigma)
    m = np.sqrt(re * re + im * im)
    out: np.ndarray = m / (m.mean() + 1e-6)
    return out


def to_uint8(a: np.ndarray, lo: float | None = None, hi: float | None = None, *,
             pct: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Map ``a`` linearly so ``lo→0`` and ``hi→255`` (percentiles when not given), clip, round."""
    a = np.asarray(a, dtype=np.float32)
    if lo is None or hi is None:
        plo, phi = np.percentile(a, pct)
        lo = plo if lo is None else lo
        hi = phi if hi is None else hi
    scale = 255.0 / max(float(hi) - float(lo), 1e-6)
    out: np.ndarray = np.clip(np.rint((a - np.float32(lo)) * np.float32(scale)), 0, 255).astype(np.uint8)
    return out


def paint(labels: np.ndarray, mask: np.ndarray, value: int) -> None:
    """Write ``value`` into ``labels`` where ``mask`` (later paints win: nested structures last)."""
    labels[mask] = value


def finalize_labels(labels: np.ndarray, names: list[str], *, min_voxels: int = 12) -> tuple[np.ndarray, list[str]]:
    """Check every label ``1..K`` has at least ``min_voxels`` voxels in one piece-ish; else regenerate.

    Returns the label map as ``uint8`` and the names. Raises :class:`RegenerateCase` when a
    structure vanished (e.g. overwritten by another) so the caller can draw again.
    """
    k = len(names)
    counts = np.bincount(labels.ravel(), minlength=k + 1)
    if labels.max() > k:
        raise ValueError("label value above the number of names")
    for i in range(1, k + 1):
        if counts[i] < min_voxels:
            raise RegenerateCase(f"label {i} ({names[i - 1]}) has only {counts[i]} voxels")
    return labels.astype(np.uint8), list(names)
