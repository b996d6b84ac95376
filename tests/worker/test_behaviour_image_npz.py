"""The test image's well-behaved path (tests/images/behaviour/scripts/common.py) reads cases and writes its box-fill
prediction with the standard library only (numpy's import would cost each of the suite's hundreds of runs ~70 ms):
what it writes must be what numpy writes and reads, for every layout a case may come in."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "images" / "behaviour" / "scripts"


@pytest.fixture(scope="module")
def common():
    spec = importlib.util.spec_from_file_location("behaviour_common", SCRIPTS / "common.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert "numpy" not in mod.__dict__ and "np" not in mod.__dict__, "the well-behaved path must not import numpy"
    return mod


def _box_fill_numpy(imgs: np.ndarray, boxes: np.ndarray, three_d: bool) -> np.ndarray:
    """The reference: the numpy box fill the image used before (slices clip at the array's edge)."""
    boxes = np.atleast_2d(boxes)
    seg = np.zeros(imgs.shape[:3] if three_d else imgs.shape[:2], np.uint8)
    for i, box in enumerate(boxes, start=1):
        b = [int(v) for v in box]
        if three_d:
            seg[b[2]:b[5] + 1, b[1]:b[4] + 1, b[0]:b[3] + 1] = i
        else:
            seg[b[1]:b[3] + 1, b[0]:b[2] + 1] = i
    return seg


CASES = {
    "3DBox_CT_0001.npz": (np.zeros((6, 20, 24), np.int16), np.array([[2, 3, 1, 10, 12, 4], [15, 0, 3, 30, 5, 9]])),
    "2DBox_US_0001.npz": (np.zeros((16, 20, 3), np.uint8), np.array([[1, 2, 5, 7], [10, 10, 25, 14]], np.int32)),
    "2DBox_XRay_0001.npz": (np.zeros((16, 20), np.uint8), np.array([4.0, 3.0, 9.0, 12.0])),  # one box, 1-D, floats
    "2DBox_OCT_0001.npz": (np.zeros((16, 20), np.uint8), np.asfortranarray(np.array([[1, 1, 3, 4], [6, 2, 8, 9]]))),
    "2DBox_Big_0001.npz": (np.zeros((8, 8), np.uint8), np.array([[0, 0, 7, 7]], dtype=">i8")),  # big-endian
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("compressed", [True, False], ids=["savez_compressed", "savez"])
def test_stdlib_box_fill_equals_numpy_and_loads_without_pickle(common, tmp_path, name, compressed):
    imgs, boxes = CASES[name]
    case = tmp_path / name
    (np.savez_compressed if compressed else np.savez)(case, imgs=imgs, boxes=boxes)
    shape, data = common.box_fill_bytes(str(case))
    out = tmp_path / "out.npz"
    common.write_uint8_npz(out, shape, data)
    with np.load(out, allow_pickle=False) as f:
        assert f.files == ["segs"]
        segs = f["segs"]
    want = _box_fill_numpy(imgs, boxes, name.startswith("3D"))
    assert segs.dtype == np.uint8 and segs.shape == want.shape
    assert np.array_equal(segs, want)
    assert segs.any()


def test_the_well_behaved_path_runs_without_numpy(tmp_path):
    """In a fresh interpreter, as in the container: reading a case and writing its output loads no numpy module."""
    imgs, boxes = CASES["3DBox_CT_0001.npz"]
    case = tmp_path / "3DBox_CT_0001.npz"
    np.savez_compressed(case, imgs=imgs, boxes=boxes)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import common; "
            "shape, data = common.box_fill_bytes(sys.argv[2]); common.write_uint8_npz(sys.argv[3], shape, data); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'numpy'))")
    out = subprocess.run([sys.executable, "-c", code, str(SCRIPTS), str(case), str(tmp_path / "out.npz")],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    for script in ("correct.py", "slow.py"):
        assert "numpy" not in (SCRIPTS / script).read_text(), script
