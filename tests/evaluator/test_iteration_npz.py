"""ONE writer of interactive iteration inputs (evaluator.interactive.write_iteration_npz), used by the execution host
(worker.interactive.prompted_input): stored zip members (the input is rewritten at every iteration; deflating the
image each time cost more than a container start), pickles without ``numpy._core`` (numpy 1.x containers load them:
tests/evaluator/test_interactive_docker.py runs that in the base image's numpy 1.24), and ``np.load`` gives the
arrays the reference's ``np.savez_compressed`` gives."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from evaluator.interactive import accumulate_clicks, iteration_inputs, next_clicks, write_iteration_npz


def _arrays() -> tuple[dict, dict, dict]:
    gt = np.zeros((6, 20, 24), np.uint8)
    gt[1:5, 3:12, 4:14] = 1
    gt[2:4, 13:18, 15:22] = 2
    case = {"imgs": (gt * 40).astype(np.uint8), "spacing": np.array([2.0, 1.0, 1.0]),
            "boxes": np.array([[4, 3, 1, 13, 11, 4], [15, 13, 2, 21, 17, 3]])}
    pred = np.zeros_like(gt)
    pred[1:5, 3:12, 4:10] = 1
    clicks = accumulate_clicks([next_clicks(gt, pred, spacing=(2.0, 1.0, 1.0))])
    return case, clicks, iteration_inputs(case, iteration=1, clicks=clicks, prev_pred=pred)


def test_the_worker_writes_inputs_with_the_one_writer(tmp_path: Path) -> None:
    from worker.interactive import prompted_input

    case, clicks, arrays = _arrays()
    np.savez(tmp_path / "orig.npz", **case)
    ours = prompted_input(tmp_path / "orig.npz", tmp_path / "w" / "c.npz", iteration=1, prompt="box",
                          clicks=clicks, prev_pred=arrays["prev_pred"])
    write_iteration_npz(tmp_path / "e.npz", arrays)
    assert ours.read_bytes() == (tmp_path / "e.npz").read_bytes()  # one writer, byte for byte
    import worker.interactive as wi

    assert not hasattr(wi, "write_portable_npz")


def test_members_stored_pickles_portable_values_as_savez_compressed(tmp_path: Path) -> None:
    _case, _clicks, arrays = _arrays()
    write_iteration_npz(tmp_path / "ours.npz", arrays)
    with zipfile.ZipFile(tmp_path / "ours.npz") as zf:
        infos = zf.infolist()
        assert infos and all(i.compress_type == zipfile.ZIP_STORED for i in infos)
        assert all(b"numpy._core" not in zf.read(i) for i in infos)  # numpy < 1.26 lacks numpy._core
    np.savez_compressed(tmp_path / "ref.npz", **arrays)
    with np.load(tmp_path / "ours.npz", allow_pickle=True) as a, np.load(tmp_path / "ref.npz", allow_pickle=True) as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            assert a[k].tolist() == b[k].tolist(), k
