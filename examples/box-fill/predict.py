"""Box-fill baseline: every prompt box filled with its label (label i answers box i).

The CVPR 2024 interface: each case is /workspace/inputs/<name>.npz with `imgs` and `boxes`;
write /workspace/outputs/<name>.npz with `segs`, an integer label map of the input's spatial shape.
"""

import glob
import os

import numpy as np

INPUTS, OUTPUTS = "/workspace/inputs", "/workspace/outputs"


def box_slices(box, dim):
    b = [int(round(v)) for v in box]
    if dim == 2:  # [x_min, y_min, x_max, y_max], inclusive
        return (slice(b[1], b[3] + 1), slice(b[0], b[2] + 1))
    return (slice(b[2], b[5] + 1), slice(b[1], b[4] + 1), slice(b[0], b[3] + 1))


def box_volume(box, dim):
    half = len(box) // 2
    return float(np.prod([max(box[half + k] - box[k] + 1, 1) for k in range(half)]))


def predict(path):
    name = os.path.basename(path)
    with np.load(path, allow_pickle=False) as data:
        imgs, boxes = data["imgs"], np.asarray(data["boxes"]).reshape(-1, 4 if name.startswith("2D") else 6)
    dim = 2 if name.startswith("2D") else 3
    shape = imgs.shape[:2] if dim == 2 else imgs.shape
    segs = np.zeros(shape, dtype=np.uint8 if len(boxes) < 256 else np.uint16)
    # largest box first, so a nested (smaller) structure keeps its own label
    for i in sorted(range(len(boxes)), key=lambda k: -box_volume(boxes[k], dim)):
        segs[box_slices(boxes[i], dim)] = i + 1
    np.savez_compressed(os.path.join(OUTPUTS, name), segs=segs)


if __name__ == "__main__":
    for case in sorted(glob.glob(os.path.join(INPUTS, "*.npz"))):
        predict(case)
