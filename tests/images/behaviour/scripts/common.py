"""Shared helpers of SegArena's test submission image (tests/images/behaviour; the table: tests/behaviours.py).

Each behaviour is one script next to this file, chosen at build time (``--build-arg BEHAVIOUR=<name>``). The
behaviours whose misbehaviour is meant to be *contained* then write a correct box-fill output, so the case ends
``ok`` and the tests assert on the ``PROBE key=value`` lines they print (e.g. ``PROBE write_errno_etc_probe=30``).
"""

import glob
import os
import sys

import numpy as np

INPUTS = "/workspace/inputs"
OUTPUTS = "/workspace/outputs"


def probe(key, value):
    """One machine-readable probe line on stdout (the worker keeps the log's head and tail)."""
    print(f"PROBE {key}={value}", flush=True)


def cases():
    return sorted(glob.glob(os.path.join(INPUTS, "*.npz")))


def load_case(path):
    with np.load(path, allow_pickle=False) as data:
        return data["imgs"], np.atleast_2d(np.asarray(data["boxes"]))


def box_fill(path):
    """A weak but real prediction: box i filled with label i (the case's spatial shape, uint8)."""
    imgs, boxes = load_case(path)
    name = os.path.basename(path)
    if name.startswith("3D"):
        seg = np.zeros(imgs.shape[:3], np.uint8)
        for i, box in enumerate(boxes, start=1):
            x0, y0, z0, x1, y1, z1 = (int(v) for v in box[:6])
            seg[z0:z1 + 1, y0:y1 + 1, x0:x1 + 1] = i
    else:
        seg = np.zeros(imgs.shape[:2], np.uint8)
        for i, box in enumerate(boxes, start=1):
            x0, y0, x1, y1 = (int(v) for v in box[:4])
            seg[y0:y1 + 1, x0:x1 + 1] = i
    return seg


def out_path(path):
    return os.path.join(OUTPUTS, os.path.basename(path))


def write_seg(path, seg, **extra):
    arrays = {"segs": seg, **extra}
    np.savez_compressed(out_path(path), **arrays)


def write_correct_outputs():
    """Behave: write the box-fill output for every case given."""
    for path in cases():
        write_seg(path, box_fill(path))


def errno_of(fn):
    """Run ``fn``; return 'ok' or the errno (number) of the OSError it raised."""
    try:
        fn()
        return "ok"
    except OSError as exc:
        return exc.errno


def stderr(msg):
    print(msg, file=sys.stderr, flush=True)
