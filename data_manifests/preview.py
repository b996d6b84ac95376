"""Contact sheet of a test set: one case per modality, image beside its labels and boxes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ._npz import read_npz
from ._png import draw_text, write_png
from .schema import TestSetManifest

__all__ = ["PreviewItem", "render_case", "contact_sheet", "preview_manifest"]

_COLORS = np.array(
    [(255, 64, 64), (64, 200, 255), (255, 220, 0), (80, 255, 80), (255, 120, 255),
     (255, 150, 40), (150, 120, 255), (0, 255, 200), (255, 255, 255), (200, 80, 120)],
    dtype=np.uint8,
)


@dataclass
class PreviewItem:
    """What the sheet needs of one case."""

    case_id: str
    modality: str
    input_path: Path
    gt_path: Path | None
    caption: str = ""


def _pick_slice(labels: np.ndarray) -> int:
    """Slice showing the most distinct labels, then the most labelled voxels."""
    best, best_key = labels.shape[0] // 2, (-1, -1)
    for z in range(labels.shape[0]):
        sl = labels[z]
        key = (len(np.unique(sl[sl > 0])), int(np.count_nonzero(sl)))
        if key > best_key:
            best, best_key = z, key
    return int(best)


def _resize_nn(a: np.ndarray, h: int, w: int) -> np.ndarray:
    ys = np.minimum((np.arange(h) + 0.5) * a.shape[0] / h, a.shape[0] - 1).astype(int)
    xs = np.minimum((np.arange(w) + 0.5) * a.shape[1] / w, a.shape[1] - 1).astype(int)
    out: np.ndarray = a[ys][:, xs]
    return out


def render_case(image: np.ndarray, labels: np.ndarray | None, boxes: np.ndarray | None, *, size: int = 256) -> np.ndarray:
    """Two panels side by side: the image, and the image with label contours and boxes."""
    if image.ndim == 3 and image.shape[-1] != 3:          # 3D volume
        z = _pick_slice(labels) if labels is not None else image.shape[0] // 2
        img2 = image[z]
        lab2 = labels[z] if labels is not None else None
        bx = None
        if boxes is not None:
            bx = np.array([[b[0], b[1], b[3], b[4]] for b in boxes if b[2] <= z <= b[5]]).reshape(-1, 4)
            idx = [i for i, b in enumerate(boxes) if b[2] <= z <= b[5]]
        tag = f"z={z}"
    else:
        img2, lab2, bx, tag = image, labels, boxes, ""
        idx = list(range(len(boxes))) if boxes is not None else []
    rgb = np.repeat(img2[..., None], 3, axis=-1) if img2.ndim == 2 else img2
    rgb = rgb.astype(np.uint8)
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    th, tw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    left = _resize_nn(rgb, th, tw)
    right = (left.astype(np.float32) * 0.85).astype(np.uint8)
    if lab2 is not None:
        lab_r = _resize_nn(lab2, th, tw)
        for v in np.unique(lab_r[lab_r > 0]):
            m = lab_r == v
            edge = m & ~ndimage.binary_erosion(m)
            col = _COLORS[(int(v) - 1) % len(_COLORS)]
            right[m] = (0.7 * right[m] + 0.3 * col).astype(np.uint8)
            right[edge] = col
    if bx is not None:
        for i, b in zip(idx, bx):
            col = _COLORS[i % len(_COLORS)]
            x0, y0, x1, y1 = (int(round(v * scale)) for v in b)
            x0, x1 = np.clip([x0, x1], 0, tw - 1)
            y0, y1 = np.clip([y0, y1], 0, th - 1)
            right[y0, x0 : x1 + 1] = col
            right[y1, x0 : x1 + 1] = col
            right[y0 : y1 + 1, x0] = col
            right[y0 : y1 + 1, x1] = col
    tile = np.zeros((size, 2 * size + 4, 3), dtype=np.uint8)
    oy, ox = (size - th) // 2, (size - tw) // 2
    tile[oy : oy + th, ox : ox + tw] = left
    tile[oy : oy + th, size + 4 + ox : size + 4 + ox + tw] = right
    if tag:
        draw_text(tile, tag, size - 10, size + 8, (255, 255, 0))
    return tile


def contact_sheet(items: list[PreviewItem], out: str | os.PathLike[str], *, size: int = 256, columns: int = 2) -> Path:
    """Render ``items`` into a grid PNG with a caption above each tile pair."""
    tiles = []
    for it in items:
        inp = read_npz(it.input_path, ("imgs", "boxes"))
        labels = read_npz(it.gt_path, ("gts",)).get("gts") if it.gt_path is not None else None
        tile = render_case(inp["imgs"], labels, inp.get("boxes"), size=size)
        cap = np.zeros((16, tile.shape[1], 3), dtype=np.uint8)
        draw_text(cap, f"{it.modality}: {it.case_id} {it.caption}"[: tile.shape[1] // 6], 4, 4)
        tiles.append(np.concatenate([cap, tile], axis=0))
    if not tiles:
        raise ValueError("nothing to preview")
    th, tw = tiles[0].shape[:2]
    rows = (len(tiles) + columns - 1) // columns
    pad = 6
    sheet = np.full((rows * (th + pad) + pad, columns * (tw + pad) + pad, 3), 40, dtype=np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = pad + r * (th + pad), pad + c * (tw + pad)
        sheet[y : y + th, x : x + tw] = t
    return write_png(out, sheet)


def preview_manifest(manifest: TestSetManifest, data_root: str | os.PathLike[str], out: str | os.PathLike[str],
                     *, per_modality: int = 1, size: int = 256) -> Path:
    """Contact sheet of the first ``per_modality`` cases of each modality in ``manifest``."""
    root = Path(data_root)
    items = []
    for mod in manifest.modalities():
        cases = [c for c in manifest.cases if c.modality == mod][:per_modality]
        for c in cases:
            sp = "x".join(f"{s:g}" for s in c.spacing)
            items.append(PreviewItem(c.id, mod, root / c.input.path, root / c.gt.path,
                                     f"{'x'.join(map(str, c.shape))} sp {sp}"))
    return contact_sheet(items, out, size=size)
