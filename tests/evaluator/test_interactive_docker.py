"""The interactive baselines built from the local base image (Debian's numpy 1.x) and run the way the judges run a
container (no network, read-only root, non-root, one input), on inputs written by ``write_iteration_npz``: the
pickled ``clicks`` must load there (numpy 2's own pickles name ``numpy._core``, which numpy 1.x lacks — the first
run of click-refine failed on exactly that), and the results equal the local simulation's."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import numpy as np
import pytest

from evaluator.interactive import (
    accumulate_clicks,
    iteration_inputs,
    manifest_points,
    next_clicks,
    prompt_inputs,
    score_iteration,
    write_iteration_npz,
)
from evaluator.io import load_ground_truth, load_prediction

pytestmark = [pytest.mark.docker]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from data_manifests import materialize

    return materialize("tiny", tmp_path_factory.mktemp("tiny"))


def _run(docker_client, tag: str, arrays: dict, name: str) -> Path:  # type: ignore[no-untyped-def]
    d = Path(tempfile.mkdtemp())
    (d / "in").mkdir()
    (d / "out").mkdir()
    (d / "out").chmod(0o777)
    write_iteration_npz(d / "in" / name, arrays)
    docker_client.containers.run(
        tag, ["/bin/sh", "-c", "sh predict.sh"], remove=True, network_mode="none", read_only=True,
        tmpfs={"/tmp": "size=256m"}, user="1000:1000", cap_drop=["ALL"], mem_limit="2g", working_dir="/workspace",
        volumes={str(d / "in"): {"bind": "/workspace/inputs", "mode": "ro"},
                 str(d / "out"): {"bind": "/workspace/outputs", "mode": "rw"}})
    return d / "out" / name


def _local(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(f"local_{name}", ROOT / "examples" / name / "predict.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_baselines_run_in_containers_on_the_iteration_inputs(docker_client, base_image, tiny) -> None:  # type: ignore[no-untyped-def]
    from segarena.demo import build_baseline

    manifest, root = tiny
    tags = {n: build_baseline(docker_client, n, base_image, say=lambda _m: None) for n in ("click-refine", "point-grow")}
    refine, grow = _local("click-refine"), _local("point-grow")
    for cid in ("3DBox_MR_0001", "2DBox_Fundus_0001"):
        case = manifest.case(cid)
        gts, spacing = load_ground_truth(root / case.gt.path)
        labels = [lab.value for lab in case.labels]
        with np.load(root / case.input.path) as f:
            data = {k: f[k] for k in f.files}
        preds: list[np.ndarray] = []
        for it in range(3):
            clicks = accumulate_clicks([next_clicks(gts, p, spacing=spacing, labels=labels) for p in preds]) if it else None
            arrays = iteration_inputs(data, iteration=it, clicks=clicks, prev_pred=preds[-1] if preds else None)
            out = _run(docker_client, tags["click-refine"], arrays, f"{cid}.npz")
            preds.append(load_prediction(out, expected_shape=tuple(case.shape)))
            local = Path(tempfile.mkdtemp()) / "in.npz"
            write_iteration_npz(local, arrays)
            with np.load(local, allow_pickle=True) as f:
                want = refine.predict_arrays({k: f[k] for k in f.files}, case.dim)
            assert np.array_equal(preds[-1], want), f"{cid} iteration {it}: container and local runs differ"
        dscs = [score_iteration(gts, p, spacing=spacing, labels=labels).dsc for p in preds]
        assert dscs[2] > dscs[0], dscs
        arrays = prompt_inputs(data, prompt="point", points=manifest_points(case))
        segs = load_prediction(_run(docker_client, tags["point-grow"], arrays, f"{cid}.npz"),
                               expected_shape=tuple(case.shape))
        assert all(segs[tuple(lab.point)] == lab.value for lab in case.labels)
        local = Path(tempfile.mkdtemp()) / "in.npz"
        write_iteration_npz(local, arrays)
        with np.load(local, allow_pickle=True) as f:
            assert np.array_equal(segs, grow.predict_arrays({k: f[k] for k in f.files}, case.dim))
