"""Shared helpers of SegArena's test submission image (tests/images/behaviour; the table: tests/behaviours.py).

Each behaviour is one script next to this file, chosen at build time (``--build-arg BEHAVIOUR=<name>``). The
behaviours whose misbehaviour is meant to be *contained* then write a correct box-fill output, so the case ends
``ok`` and the tests assert on the ``PROBE key=value`` lines they print (e.g. ``PROBE write_errno_etc_probe=30``).
"""

import array
import ast
import glob
import os
import struct
import sys
import zipfile

INPUTS = "/workspace/inputs"
OUTPUTS = "/workspace/outputs"


def probe(key, value):
    """One machine-readable probe line on stdout (the worker keeps the log's head and tail)."""
    print(f"PROBE {key}={value}", flush=True)


def cases():
    return sorted(glob.glob(os.path.join(INPUTS, "*.npz")))


# -- the well-behaved path, without numpy ------------------------------------------------------------------------
# Most behaviours end by writing the correct output; done with the standard library (the .npy format: numpy's
# format.rst), a run costs ~10 ms of CPU instead of numpy's ~70 ms import: the suite runs hundreds of them.
_CODES = {"i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I", "i8": "q", "u8": "Q", "f4": "f", "f8": "d"}


def _npy_header(f):
    """(descr, fortran_order, shape) of the .npy stream ``f``, left at the start of its data."""
    magic = f.read(8)
    if magic[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy member")
    size = struct.unpack("<H", f.read(2))[0] if magic[6] == 1 else struct.unpack("<I", f.read(4))[0]
    header = ast.literal_eval(f.read(size).decode("latin1"))
    return header["descr"], header["fortran_order"], tuple(header["shape"])


def read_case(path):
    """(the shape of ``imgs``, the boxes as lists of ints) of a case file."""
    with zipfile.ZipFile(path) as z:
        with z.open("imgs.npy") as f:
            shape = _npy_header(f)[2]
        with z.open("boxes.npy") as f:
            descr, fortran, bshape = _npy_header(f)
            values = array.array(_CODES[descr[1:]], f.read())
    if descr[0] == ">":
        values.byteswap()
    width = bshape[-1] if len(bshape) > 1 else len(values)
    rows = len(values) // width if width else 0
    if fortran and len(bshape) > 1:  # column-major: value (r, c) at c * rows + r
        return shape, [[int(values[c * rows + r]) for c in range(width)] for r in range(rows)]
    return shape, [[int(v) for v in values[r * width:(r + 1) * width]] for r in range(rows)]


def box_fill_bytes(path):
    """:func:`box_fill` as (shape, the uint8 values in C order)."""
    shape, boxes = read_case(path)
    three_d = os.path.basename(path).startswith("3D")
    depth, height, width = shape[:3] if three_d else (1, *shape[:2])
    out = bytearray(depth * height * width)
    for i, box in enumerate(boxes, start=1):
        if three_d:
            x0, y0, z0, x1, y1, z1 = box[:6]
        else:
            (x0, y0, x1, y1), z0, z1 = box[:4], 0, 0
        a, b = max(x0, 0), min(x1 + 1, width)
        if b <= a:
            continue
        run = bytes([i % 256]) * (b - a)
        for z in range(max(z0, 0), min(z1 + 1, depth)):
            for y in range(max(y0, 0), min(y1 + 1, height)):
                start = (z * height + y) * width
                out[start + a:start + b] = run
    return (tuple(shape[:3]) if three_d else tuple(shape[:2])), bytes(out)


def write_uint8_npz(dest, shape, data, key="segs"):
    """An .npz of one C-order uint8 array (what ``np.savez_compressed(dest, segs=...)`` writes)."""
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': " + repr(tuple(shape)) + ", }"
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{key}.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + data)


def write_correct_outputs():
    """Behave: write the box-fill output for every case given."""
    for path in cases():
        shape, data = box_fill_bytes(path)
        write_uint8_npz(out_path(path), shape, data)


# -- numpy, for the behaviours that write something wrong ------------------------------------------------------
def box_fill(path):
    """A weak but real prediction: box i filled with label i (the case's spatial shape, uint8)."""
    import numpy as np

    shape, data = box_fill_bytes(path)
    return np.frombuffer(data, np.uint8).reshape(shape).copy()


def out_path(path):
    return os.path.join(OUTPUTS, os.path.basename(path))


def write_seg(path, seg, **extra):
    import numpy as np

    arrays = {"segs": seg, **extra}
    np.savez_compressed(out_path(path), **arrays)


def errno_of(fn):
    """Run ``fn``; return 'ok' or the errno (number) of the OSError it raised."""
    try:
        fn()
        return "ok"
    except OSError as exc:
        return exc.errno


def stderr(msg):
    print(msg, file=sys.stderr, flush=True)
