"""Click-refine baseline for interactive tracks (CPU only, numpy + scipy): the box first, then every click.

The CVPR 2025 interface (docs/interactive.md): /workspace/inputs/<name>.npz with ``imgs``, ``boxes`` (when the
box is prompted), at refinement iterations also ``clicks`` (per class ``{"fg": [[z, y, x], ...], "bg": [...]}``,
array-index order), ``clicks_order`` and ``prev_pred`` → /workspace/outputs/<name>.npz with ``segs``.

* Iteration 0 (no clicks): per box, region growing from the box centre: the voxels inside the box whose smoothed
  intensity is close to the centre's (tolerance from the box's intensity spread), the connected region holding the
  centre, holes filled. A point prompt (a first ``fg`` click without a box) grows from the point the same way.
* Each refinement iteration starts from ``prev_pred`` and applies the newest click of each class:
  a foreground click adds the region grown from it (same rule, limited to the box, dilated by a margin);
  a background click removes the part of the class around it: the connected region of similar intensity inside the
  current mask, or, when that is most of the mask (no contrast), a ball of the radius the click's distance to the
  mask's border allows.
"""

from __future__ import annotations

import glob
import os

import numpy as np
from scipy import ndimage

INPUTS, OUTPUTS = "/workspace/inputs", "/workspace/outputs"


def load(path: str) -> dict:
    with np.load(path, allow_pickle=True) as f:  # clicks / clicks_order are pickled lists, as the reference writes
        return {k: f[k] for k in f.files}


def intensity(imgs: np.ndarray, dim: int) -> np.ndarray:
    """A smoothed grey image of the spatial shape."""
    img = imgs.astype(np.float32)
    if dim == 2 and img.ndim == 3:
        img = img.mean(axis=-1)
    sigma = 1.0 if dim == 2 else (0.5, 1.0, 1.0)
    return ndimage.gaussian_filter(img, sigma)


def box_slices(box, shape, dim: int, margin: int = 0) -> tuple[slice, ...]:
    b = [int(round(v)) for v in box]
    if dim == 2:
        lo, hi = (b[1], b[0]), (b[3], b[2])
    else:
        lo, hi = (b[2], b[1], b[0]), (b[5], b[4], b[3])
    return tuple(slice(max(0, lo[k] - margin), min(shape[k], hi[k] + 1 + margin)) for k in range(dim))


def seed_value(img: np.ndarray, p: tuple[int, ...]) -> float:
    sl = tuple(slice(max(0, v - 1), v + 2) for v in p)
    return float(np.median(img[sl]))


def grow(img: np.ndarray, p: tuple[int, ...], region: tuple[slice, ...], tol: float) -> np.ndarray:
    """The connected set of voxels of ``region`` within ``tol`` of the seed value at ``p`` (full-size mask)."""
    out = np.zeros(img.shape, dtype=bool)
    if not all(s.start <= v < s.stop for v, s in zip(p, region)):
        return out
    crop = img[region]
    similar = np.abs(crop - seed_value(img, p)) <= tol
    lab, _ = ndimage.label(similar)
    local = tuple(v - s.start for v, s in zip(p, region))
    k = lab[local]
    if k == 0:
        return out
    comp = lab == k
    if crop.ndim == 3:
        comp = np.stack([ndimage.binary_fill_holes(s) for s in comp])
    else:
        comp = ndimage.binary_fill_holes(comp)
    out[region] = comp
    return out


def tolerance(img: np.ndarray, region: tuple[slice, ...], p: tuple[int, ...]) -> float:
    """Half the gap between the seed and the region's typical other intensities, at least a noise floor."""
    crop = img[region]
    v = seed_value(img, p)
    far = np.abs(crop - v)
    gap = float(np.percentile(far, 75)) if far.size else 0.0
    return max(0.5 * gap, 6.0)


def initial(img: np.ndarray, boxes: np.ndarray, dim: int, points: dict[int, tuple[int, ...]]) -> np.ndarray:
    segs = np.zeros(img.shape, dtype=np.uint8 if max(len(boxes), len(points)) < 256 else np.uint16)
    n = max(len(boxes), max(points, default=0))
    sizes = {}
    for c in range(1, n + 1):
        if c - 1 < len(boxes):
            region = box_slices(boxes[c - 1], img.shape, dim)
            p = points.get(c) or tuple((s.start + s.stop - 1) // 2 for s in region)
        elif c in points:
            p = points[c]
            region = tuple(slice(0, n_) for n_ in img.shape)
        else:
            continue
        mask = grow(img, p, region, tolerance(img, region, p))
        if mask.sum() < 0.05 * np.prod([s.stop - s.start for s in region]) and c - 1 < len(boxes):
            mask = np.zeros(img.shape, dtype=bool)  # growing failed: the box's inscribed ellipse(oid)
            mask[region] = inscribed(tuple(s.stop - s.start for s in region))
        sizes[c] = mask
    for c in sorted(sizes, key=lambda k: -int(sizes[k].sum())):  # small structures painted last
        segs[sizes[c]] = c
    return segs


def inscribed(shape: tuple[int, ...]) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    r = sum(((g - (n - 1) / 2.0) / max(n / 2.0, 0.5)) ** 2 for g, n in zip(grids, shape))
    return r <= 1.0


def refine(img: np.ndarray, segs: np.ndarray, boxes, dim: int, clicks, order) -> np.ndarray:
    segs = segs.copy()
    for j, (cl, history) in enumerate(zip(clicks, order)):
        c = j + 1
        kinds = list(history)
        if not kinds or kinds[-1] is None:
            continue
        kind = kinds[-1]
        p = tuple(int(v) for v in cl[kind][-1])
        if j < len(boxes):
            region = box_slices(boxes[j], img.shape, dim, margin=3)
        else:
            region = tuple(slice(0, n) for n in img.shape)
        mask = segs == c
        if kind == "fg":
            # the click is the centre of a missed region: a ball as far as the nearest voxel of the class is in it
            add = grow(img, p, region, tolerance(img, region, p))
            if mask.any():
                d_mask = distance_to(mask, p)
                add &= ball(img.shape, p, max(1.0, d_mask * 1.5))
                add |= ball(img.shape, p, max(1.0, d_mask - 1.0))
            segs[add & (segs == 0)] = c
            segs[p] = c
        else:
            lab, _ = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
            comp = lab == lab[p]
            if comp.sum() < 0.5 * mask.sum():  # a separate false blob: the whole of it goes
                cut = comp
            else:
                cut = grow(img, p, tuple(slice(0, n) for n in img.shape), tolerance(img, region, p)) & mask
                if not cut.any() or cut.sum() > 0.3 * mask.sum():
                    d_in = distance_to(~mask, p)
                    cut = ball(img.shape, p, max(1.0, 0.7 * d_in)) & mask
            cut[p] = True
            segs[cut & mask] = 0
    for j, cl in enumerate(clicks):  # every click so far holds
        for q in cl["fg"]:
            segs[tuple(int(v) for v in q)] = j + 1
        for q in cl["bg"]:
            if segs[tuple(int(v) for v in q)] == j + 1:
                segs[tuple(int(v) for v in q)] = 0
    return segs


def distance_to(targets: np.ndarray, p: tuple[int, ...]) -> float:
    """Euclidean distance (in voxels) from ``p`` to the nearest True voxel of ``targets``: the value
    ``ndimage.distance_transform_edt(~targets)[p]`` has (an exact transform), without the transform of the whole
    volume for one voxel."""
    idx = np.nonzero(targets)
    if not idx[0].size:  # nothing to reach: what the transform gives
        return float(ndimage.distance_transform_edt(~targets)[p])
    d2 = sum((i.astype(np.int64) - int(v)) ** 2 for i, v in zip(idx, p))
    return float(np.sqrt(np.float64(d2.min())))


def ball(shape: tuple[int, ...], p: tuple[int, ...], r: float) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - v) ** 2 for g, v in zip(grids, p)) <= r * r


def predict_arrays(data: dict, dim: int) -> np.ndarray:
    img = intensity(data["imgs"], dim)
    boxes = np.asarray(data["boxes"]).reshape(-1, 4 if dim == 2 else 6) if "boxes" in data else np.zeros((0, 6))
    clicks = list(data["clicks"].tolist()) if "clicks" in data else []
    order = data["clicks_order"].tolist() if "clicks_order" in data else []
    if "prev_pred" not in data:  # first prompt: the box (the classic baseline), or the point (the first fg click)
        if len(boxes) and not clicks:
            return classic_segs(data, dim)
        points = {j + 1: tuple(int(v) for v in cl["fg"][0]) for j, cl in enumerate(clicks) if cl["fg"]}
        return initial(img, boxes, dim, points)
    return refine(img, np.asarray(data["prev_pred"]), boxes, dim, clicks, order)


def classic_segs(data: dict, dim: int) -> np.ndarray:
    """The box-only prediction of examples/classic (classic.py is a verbatim copy of its predict.py)."""
    import importlib.util
    import tempfile

    spec = importlib.util.spec_from_file_location("click_refine_classic",
                                                  os.path.join(os.path.dirname(os.path.abspath(__file__)), "classic.py"))
    classic = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(classic)
    with tempfile.TemporaryDirectory() as tmp:
        name = f"{dim}DBox_case.npz"
        np.savez(os.path.join(tmp, name), imgs=data["imgs"], boxes=data["boxes"])
        out = os.path.join(tmp, "out")
        os.mkdir(out)
        classic.OUTPUTS = out
        classic.predict(os.path.join(tmp, name))
        with np.load(os.path.join(out, name)) as f:
            return f["segs"]


def main() -> None:
    for path in sorted(glob.glob(os.path.join(INPUTS, "*.npz"))):
        name = os.path.basename(path)
        data = load(path)
        dim = 2 if name.startswith("2D") else 3
        segs = predict_arrays(data, dim)
        np.savez_compressed(os.path.join(OUTPUTS, name), segs=segs)


if __name__ == "__main__":
    main()
