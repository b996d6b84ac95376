"""Point-grow baseline for point-prompt tracks (CPU only, numpy + scipy).

Input (docs/interactive.md, prompt ``point``): /workspace/inputs/<name>.npz with ``imgs``, ``clicks`` (per class
``{"fg": [[z, y, x]], "bg": []}``, the structure's point, array-index order) and ``points`` (the same points as an
int array, row i = class i + 1); no ``boxes``. Under ``box+point`` the boxes bound the growth. Output: ``segs``.

Per point: the smoothed image's value at the point (median of its neighbourhood); the voxels within a tolerance of
it (2 local standard deviations, at least 40 grey levels); the distance from the point to the nearest voxel outside
that set estimates the structure's inradius (the point is its farthest voxel from the border); the connected part
holding the point within POINT_GROW_RADII (5) inradii of it, holes filled. Under ``box+point`` the box bounds it.
Refinement clicks (an interactive track under ``point``): every ``fg`` click is a seed, as the first prompt.
"""

from __future__ import annotations

import glob
import os

import numpy as np
from scipy import ndimage

INPUTS, OUTPUTS = "/workspace/inputs", "/workspace/outputs"
RADII = float(os.environ.get("POINT_GROW_RADII", "5.0"))  # how many inradii from the point a structure may reach
TOL_STD = float(os.environ.get("POINT_GROW_TOL_STD", "2.0"))  # tolerance: local standard deviations around the point
TOL_MIN = float(os.environ.get("POINT_GROW_TOL_MIN", "40"))  # and at least this many grey levels


def load(path: str) -> dict:
    with np.load(path, allow_pickle=True) as f:  # clicks are pickled lists, as the reference writes them
        return {k: f[k] for k in f.files}


def grey(imgs: np.ndarray, dim: int) -> np.ndarray:
    img = imgs.astype(np.float32)
    if dim == 2 and img.ndim == 3:
        img = img.mean(axis=-1)
    return ndimage.gaussian_filter(img, 1.0 if dim == 2 else (0.5, 1.0, 1.0))


def window(shape: tuple[int, ...], p: tuple[int, ...], r: int) -> tuple[slice, ...]:
    return tuple(slice(max(0, v - r), min(n, v + r + 1)) for v, n in zip(p, shape))


def box_region(box, shape: tuple[int, ...], dim: int) -> tuple[slice, ...]:
    b = [int(round(v)) for v in box]
    lo, hi = ((b[1], b[0]), (b[3], b[2])) if dim == 2 else ((b[2], b[1], b[0]), (b[5], b[4], b[3]))
    return tuple(slice(max(0, lo[k] - 2), min(shape[k], hi[k] + 3)) for k in range(dim))


def grow_from(img: np.ndarray, p: tuple[int, ...], region: tuple[slice, ...] | None) -> np.ndarray:
    near = img[window(img.shape, p, 3)]
    v = float(np.median(near))
    tol = max(TOL_STD * float(near.std()), TOL_MIN)
    sub = region if region is not None else tuple(slice(0, n) for n in img.shape)
    crop = img[sub]
    local = tuple(q - s.start for q, s in zip(p, sub))
    similar = np.abs(crop - v) <= tol
    # the point is the structure's farthest voxel from its border: the nearest dissimilar voxel tells its inradius,
    # and the structure is kept within a few inradii of the point (against leaks into touching structures)
    r = float(ndimage.distance_transform_edt(similar)[local])
    grids = np.ogrid[tuple(slice(0, n) for n in crop.shape)]
    inside = sum((g - q) ** 2 for g, q in zip(grids, local)) <= (RADII * max(r, 1.0)) ** 2
    lab, _n = ndimage.label(similar & inside)
    k = lab[local]
    best = lab == k if k else np.zeros(crop.shape, dtype=bool)
    best = np.stack([ndimage.binary_fill_holes(s) for s in best]) if best.ndim == 3 else ndimage.binary_fill_holes(best)
    out = np.zeros(img.shape, dtype=bool)
    out[sub] = best
    out[p] = True
    return out


def predict_arrays(data: dict, dim: int) -> np.ndarray:
    img = grey(data["imgs"], dim)
    boxes = np.asarray(data["boxes"]).reshape(-1, 4 if dim == 2 else 6) if "boxes" in data else None
    seeds: dict[int, list[tuple[int, ...]]] = {}
    if "clicks" in data:
        for j, cl in enumerate(data["clicks"].tolist()):
            seeds[j + 1] = [tuple(int(v) for v in q) for q in cl["fg"]]
    elif "points" in data:
        for j, q in enumerate(np.asarray(data["points"]).tolist()):
            seeds[j + 1] = [tuple(int(v) for v in q)]
    masks = {}
    for c, pts in seeds.items():
        region = box_region(boxes[c - 1], img.shape, dim) if boxes is not None and c - 1 < len(boxes) else None
        m = np.zeros(img.shape, dtype=bool)
        for q in pts:
            m |= grow_from(img, q, region)
        masks[c] = m
    segs = np.zeros(img.shape, dtype=np.uint8 if len(masks) < 256 else np.uint16)
    for c in sorted(masks, key=lambda k: -int(masks[k].sum())):  # small structures painted last
        segs[masks[c]] = c
    for c, pts in seeds.items():  # a prompted point is its structure's, whatever grew over it
        for q in pts:
            segs[q] = c
    return segs


def main() -> None:
    for path in sorted(glob.glob(os.path.join(INPUTS, "*.npz"))):
        name = os.path.basename(path)
        dim = 2 if name.startswith("2D") else 3
        np.savez_compressed(os.path.join(OUTPUTS, name), segs=predict_arrays(load(path), dim))


if __name__ == "__main__":
    main()
