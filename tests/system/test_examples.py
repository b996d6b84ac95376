"""The baseline submissions (examples/box-fill, examples/classic), built from the local base image and
run on the generated ``tiny`` set the way the judges run them.

* Each follows the CVPR 2024 interface under the worker's sandbox (no network, read-only root, non-root,
  one case per container): a valid ``segs`` of the input's spatial shape for one case of every modality.
* box-fill fills every box with its label (checked exactly against the boxes).
* classic beats box-fill on most modalities (mean DSC per modality, scored by the evaluator).
"""

from __future__ import annotations

import shutil
from collections import defaultdict

import numpy as np
import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.docker]


@pytest.fixture(scope="module")
def tiny(tiny_copy):
    from data_manifests import materialize

    return materialize("tiny", tiny_copy.parent)  # the session's generated set: checked, not made again


@pytest.fixture(scope="module")
def baselines(docker_client, base_image):
    from segarena.demo import build_baseline

    return {name: build_baseline(docker_client, name, base_image, say=lambda _m: None) for name in ("box-fill", "classic")}


def _run_all(docker_client, tag: str, inputs, out):
    """One container over every input (predict.py loops over inputs/), under the sandbox's main flags."""
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o777)
    docker_client.containers.run(
        tag, ["/bin/sh", "-c", "sh predict.sh"], remove=True, network_mode="none", read_only=True,
        tmpfs={"/tmp": "size=256m"}, user="1000:1000", cap_drop=["ALL"], mem_limit="2g", working_dir="/workspace",
        volumes={str(inputs): {"bind": "/workspace/inputs", "mode": "ro"}, str(out): {"bind": "/workspace/outputs",
                                                                                      "mode": "rw"}})


def test_baselines_follow_the_interface_in_the_sandbox(docker_client, baselines, tiny, tmp_path, settings):
    from evaluator.io import load_prediction
    from worker.sandbox import SandboxProfile, check_output, run_case

    manifest, root = tiny
    one_per_modality = {}
    for case in manifest.cases:
        one_per_modality.setdefault(case.modality, case)
    profile = SandboxProfile(memory_bytes=2 * 1024**3, timeout_s=120)
    for name, tag in baselines.items():
        image_id = docker_client.images.get(tag).id
        for case in one_per_modality.values():
            out = tmp_path / name / case.id
            run = run_case(docker_client, image_id=image_id, input_file=root / case.input.path, out_dir=out,
                           profile=profile)
            segs = check_output(run, expected_shape=tuple(case.shape))
            assert run.status == "ok", f"{name} on {case.id}: {run.status} {run.reason}\n{run.stderr_tail}"
            assert segs is not None and segs.shape == tuple(case.shape)
            assert set(np.unique(segs)) <= set(range(len(case.labels) + 1))
            assert run.user == "image default", "the baselines declare a non-root user themselves"
            assert load_prediction(run.output_path, expected_shape=tuple(case.shape)).shape == tuple(case.shape)


def test_box_fill_fills_every_box_with_its_label(docker_client, baselines, tiny, tmp_path):
    manifest, root = tiny
    out = tmp_path / "out"
    _run_all(docker_client, baselines["box-fill"], root / "inputs", out)
    for case in manifest.cases:
        with np.load(root / case.input.path) as d:
            boxes = d["boxes"]
        segs = np.load(out / f"{case.id}.npz")["segs"]
        expected = np.zeros(tuple(case.shape), np.uint8)
        order = sorted(range(len(boxes)),
                       key=lambda i: -np.prod(boxes[i][len(boxes[i]) // 2:] - boxes[i][:len(boxes[i]) // 2] + 1))
        for i in order:
            b = boxes[i]
            if case.dim == 2:
                expected[b[1]:b[3] + 1, b[0]:b[2] + 1] = i + 1
            else:
                expected[b[2]:b[5] + 1, b[1]:b[4] + 1, b[0]:b[3] + 1] = i + 1
        np.testing.assert_array_equal(segs, expected, err_msg=case.id)


def test_classic_beats_box_fill_on_most_modalities(docker_client, baselines, tiny, tmp_path):
    from evaluator import score_case
    from evaluator.io import load_ground_truth, load_prediction

    manifest, root = tiny
    per_mod: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for name, tag in baselines.items():
        out = tmp_path / name
        _run_all(docker_client, tag, root / "inputs", out)
        for case in manifest.cases:
            gts, spacing = load_ground_truth(root / case.gt.path)
            segs = load_prediction(out / f"{case.id}.npz", expected_shape=tuple(case.shape))
            per_mod[case.modality][name].append(score_case(gts, segs, spacing=spacing).dsc)
        shutil.rmtree(out)
    means = {m: {k: float(np.mean(v)) for k, v in d.items()} for m, d in per_mod.items()}
    wins = [m for m, d in means.items() if d["classic"] > d["box-fill"]]
    report = ", ".join(f"{m} {d['classic']:.3f} vs {d['box-fill']:.3f}" for m, d in means.items())
    assert len(wins) >= 6, f"classic beats box-fill on {len(wins)}/{len(means)} modalities: {report}"
    overall = {k: np.mean([np.mean(per_mod[m][k]) for m in per_mod]) for k in ("classic", "box-fill")}
    assert overall["classic"] > overall["box-fill"] + 0.05, overall


def test_example_challenge_yaml_is_a_valid_challenge():
    """The README's organizer example parses with the CLI's loader and validates against the API schema."""
    from api.challenges.schemas import ChallengeCreate
    from segarena.admin import load_challenge_yaml

    spec = load_challenge_yaml(ROOT / "examples" / "challenge.yaml")
    challenge = ChallengeCreate(**spec)
    assert [t.kind.value if hasattr(t.kind, "value") else t.kind for t in challenge.tracks] == [
        "main", "booster", "reproducibility"]
