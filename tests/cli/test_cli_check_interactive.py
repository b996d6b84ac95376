"""``segarena check`` pre-flights an interactive image: the iteration loop runs locally as the platform runs it
(iteration 0 with the box, then K refinement iterations, each a fresh sandboxed container given the clicks that
evaluator.interactive simulates from the public sample's ground truth and the last valid prediction), per-iteration
DSC and the AUCs reported, an iteration without output named with its fix.

Real Docker engine, the worker's sandbox, the local base image; examples/click-refine (the CPU baseline) and the
test image click-silent3 (writes nothing at iteration 3)."""

from __future__ import annotations

import itertools
import re

import pytest

from tests.cli_helpers import run_cli
from tests.worker_helpers import build_test_image

pytestmark = pytest.mark.docker


@pytest.fixture
def env(tmp_path, settings):
    return {"SEGARENA_CACHE_DIR": str(tmp_path / "cache"), "SEGARENA_CONFIG": str(tmp_path / "none.toml"),
            "SEGARENA_DATA_DIR": str(settings.data_dir), "SEGARENA_URL": "http://127.0.0.1:9"}


def _curves(stdout: str) -> dict[str, list[float]]:
    out = {}
    for m in re.finditer(r"(\dDBox_\S+)\s+ok\s+[\d.]+ s\s+DSC per iteration ((?:[\d.]+ ?)+)", stdout):
        out[m.group(1)] = [float(x) for x in m.group(2).split()]
    return out


def test_check_runs_the_iteration_loop_on_the_click_baseline(docker_client, base_image, env):
    from segarena.demo import build_baseline

    tag = build_baseline(docker_client, "click-refine", base_image, say=lambda _m: None)
    proc = run_cli("check", tag, "--offline", "--interactive", "--iterations", "3", "--cases", "2", env=env,
                   timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "interactive: 3 refinement iteration(s)" in " ".join(out.split())
    curves = _curves(out)
    assert len(curves) == 2 and any(c.startswith("3D") for c in curves) and any(c.startswith("2D") for c in curves)
    for cid, d in curves.items():
        assert len(d) == 4, (cid, d)  # iteration 0 + 3 clicks
        assert all(b >= a - 1e-3 for a, b in itertools.pairwise(d)), (cid, d)  # the baseline uses the clicks
    assert any(d[-1] > d[0] for d in curves.values()), curves
    assert "DSC AUC" in out and "all sample cases passed" in out


def test_check_names_an_iteration_without_output(docker_client, base_image, env):
    tag = build_test_image(docker_client, base_image, "click-silent3")
    proc = run_cli("check", tag, "--offline", "--interactive", "--iterations", "3", "--cases", "1", env=env,
                   timeout=600)
    out = " ".join(proc.stdout.split())
    assert proc.returncode == 1, out
    assert "iteration 3" in out and "no output: outputs/" in out, out
    assert "kept the prediction of iteration 2" in out, out
    assert "Traceback" not in proc.stderr
