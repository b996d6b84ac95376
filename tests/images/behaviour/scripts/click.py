"""SegArena test models for interactive tracks (CVPR25_iter_eval.py's input keys): behaviour click-<mode> runs
this with <mode> (tests/behaviours.py).

Input: ``imgs``, ``boxes`` (or ``points``), from iteration 1 on also ``clicks`` (per class {'fg': [...], 'bg': [...]},
pickled lists as the reference stores them), ``clicks_order`` and ``prev_pred``. Output: ``segs``.

- refine: box fill at iteration 0 (the points' voxels under prompt point); then the previous prediction with every
  foreground click's voxel set to its class and every background click's voxel cleared. The trusted side clicks
  inside an error region, so each click fixes one wrong voxel: the DSC rises strictly with clicks (by a little).
- ignore: box fill at every iteration (ignores the clicks): scores flat, recorded, no crash.
- silent3: like refine, but writes nothing at iteration 3.
- slow: like refine, but sleeps 30 s from iteration 1 on: exceeds any small class budget there.
- float: like refine, but writes ``segs`` as float32 (the labels as floats): scored under cvpr24/cvpr25 (as the
  references did), refused as invalid under default.
"""
import sys
import time
from pathlib import Path

import numpy as np

IN, OUT = Path("/workspace/inputs"), Path("/workspace/outputs")


def box_fill(data, name: str) -> np.ndarray:
    imgs = data["imgs"]
    three_d = name.startswith("3D")
    shape = imgs.shape if three_d else imgs.shape[:2]
    segs = np.zeros(shape, dtype=np.uint8)
    if "boxes" not in data.files:  # prompt point: the points' voxels
        for i, p in enumerate(np.asarray(data["points"]).reshape(-1, segs.ndim) if "points" in data.files else [],
                              start=1):
            segs[tuple(int(v) for v in p)] = i
        return segs
    for i, box in enumerate(np.asarray(data["boxes"]).reshape(len(data["boxes"]), -1), start=1):
        box = [int(v) for v in box]
        if three_d:
            x0, y0, z0, x1, y1, z1 = box
            segs[z0:z1 + 1, y0:y1 + 1, x0:x1 + 1] = i
        else:
            x0, y0, x1, y1 = box
            segs[y0:y1 + 1, x0:x1 + 1] = i
    return segs


def ball(shape, center, r=0) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    d = sum((g - int(c)) ** 2 for g, c in zip(grids, center))
    return d <= r * r


def iteration_of(data) -> int:
    if "clicks_order" not in data.files:
        return 0
    order = data["clicks_order"]
    return max((len(o) for o in order), default=0)


def refine(data, name: str) -> np.ndarray:
    if "prev_pred" not in data.files:
        return box_fill(data, name)
    segs = np.array(data["prev_pred"], dtype=np.uint8)
    for cls, clicks in enumerate(data["clicks"], start=1):
        for c in clicks.get("fg", []):
            segs[ball(segs.shape, c[: segs.ndim]) & (segs == 0)] = cls
        for c in clicks.get("bg", []):
            segs[ball(segs.shape, c[: segs.ndim]) & (segs == cls)] = 0
    return segs


def main(mode: str) -> int:
    for f in sorted(IN.glob("*.npz")):
        data = np.load(f, allow_pickle=True)
        it = iteration_of(data)
        print(f"{f.name}: iteration {it}, keys {sorted(data.files)}", flush=True)
        if mode == "slow" and it >= 1:
            print("thinking for 30 s", flush=True)
            time.sleep(30)
        if mode == "silent3" and it == 3:
            print("writing nothing at iteration 3", flush=True)
            continue
        segs = box_fill(data, f.name) if mode == "ignore" else refine(data, f.name)
        if mode == "float":
            segs = segs.astype(np.float32)
        np.savez_compressed(OUT / f.name, segs=segs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
