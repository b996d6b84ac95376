"""``segarena check``: the participant's pre-flight finds each interface mistake and says how to fix it.

Real Docker engine, the worker's sandbox, the local base image. Each broken image is a few lines of
Python built from the base (COPY only); checks run on one or two public sample cases.
"""

from __future__ import annotations

import textwrap
import pytest

from tests.cli_helpers import run_cli

pytestmark = pytest.mark.docker

# the body of predict.py for each variant: INPUTS/OUTPUTS and helpers come from the header below
HEADER = '''
import glob, os, sys
import numpy as np
INPUTS, OUTPUTS = "/workspace/inputs", "/workspace/outputs"
def cases():
    for path in sorted(glob.glob(os.path.join(INPUTS, "*.npz"))):
        with np.load(path) as d:
            imgs = d["imgs"]
        name = os.path.basename(path)
        shape = imgs.shape[:2] if name.startswith("2D") else imgs.shape
        yield path, name, imgs, np.zeros(shape, np.uint8)
'''
VARIANTS = {
    "good": "for p, n, imgs, segs in cases(): np.savez_compressed(os.path.join(OUTPUTS, n), segs=segs)",
    "wrong_name": "for p, n, imgs, segs in cases(): np.savez_compressed(os.path.join(OUTPUTS, 'prediction.npz'), segs=segs)",
    "missing_segs": "for p, n, imgs, segs in cases(): np.savez_compressed(os.path.join(OUTPUTS, n), mask=segs)",
    "wrong_shape": "for p, n, imgs, segs in cases(): "
                   "np.savez_compressed(os.path.join(OUTPUTS, n), segs=np.zeros(imgs.shape, np.uint8)[..., :1])",
    "writes_outside": ("np.save('/workspace/cache.npy', np.zeros(3))\n"
                       "for p, n, imgs, segs in cases(): np.savez_compressed(os.path.join(OUTPUTS, n), segs=segs)"),
    "needs_network": ("import urllib.request\n"
                      "urllib.request.urlopen('http://127.0.0.1:9/weights.pt', timeout=3)  # 'download the weights'\n"
                      "for p, n, imgs, segs in cases(): np.savez_compressed(os.path.join(OUTPUTS, n), segs=segs)"),
    "root_only": ("open('/workspace/weights.bin', 'rb').read()\n"
                  "for p, n, imgs, segs in cases(): np.savez_compressed(os.path.join(OUTPUTS, n), segs=segs)"),
    "no_output": "print('done, I think')",
}


@pytest.fixture(scope="module")
def images(docker_client, base_image, tmp_path_factory):
    """Build every variant as segarena-test/check-<name>; the root_only one keeps root and a 0600 file."""
    tags = {}
    for name, body in VARIANTS.items():
        ctx = tmp_path_factory.mktemp(f"check-{name}")
        (ctx / "predict.py").write_text(textwrap.dedent(HEADER) + body + "\n")
        (ctx / "predict.sh").write_text("python3 /workspace/predict.py\n")
        (ctx / "weights.bin").write_bytes(b"\0" * 16)
        user = "" if name == "root_only" else "USER 1000:1000\n"
        (ctx / "Dockerfile").write_text(
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nWORKDIR /workspace\nCOPY predict.py predict.sh /workspace/\n"
            "COPY weights.bin /workspace/weights.bin\nRUN chmod 600 /workspace/weights.bin\n" + user)
        tag = f"segarena-test/check-{name}:latest"
        docker_client.images.build(path=str(ctx), tag=tag, rm=True, buildargs={"BASE_IMAGE": base_image},
                                   network_mode="none")
        tags[name] = tag
    return tags


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("segarena-cache")


@pytest.fixture
def env(tmp_path, settings, cache):
    return {"SEGARENA_CACHE_DIR": str(cache), "SEGARENA_CONFIG": str(tmp_path / "none.toml"),
            "SEGARENA_DATA_DIR": str(settings.data_dir), "SEGARENA_URL": "http://127.0.0.1:9"}


def check(image: str, env: dict, *extra: str):
    return run_cli("check", image, "--offline", "--cases", "2", *extra, env=env, timeout=300)


def test_good_image_passes_and_reports_the_charged_runtime(images, env):
    proc = check(images["good"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all sample cases passed" in proc.stdout
    assert "runtime charged per case: mean" in proc.stdout
    assert "3DBox_" in proc.stdout and "2DBox_" in proc.stdout, "a 3D and a 2D sample case"


@pytest.mark.parametrize("variant, problem, fix", [
    ("wrong_name", "wrong output file name: it wrote prediction.npz", "os.path.basename(input_path)"),
    ("missing_segs", "no 'segs' array", "segs=labels"),
    ("wrong_shape", "wrong shape", "input's spatial shape"),
    ("writes_outside", "wrote outside /workspace/outputs", "only to /workspace/outputs"),
    ("needs_network", "tried to use the network", "into the image at build time"),
    ("root_only", "expects root, but this track runs it as uid 1000", "chmod -R a+rX"),
    ("no_output", "no output: outputs/", "np.savez_compressed(path, segs=labels)"),
])
def test_each_mistake_is_named_with_its_fix(images, env, variant, problem, fix):
    proc = check(images[variant], env)
    out = " ".join(proc.stdout.split())  # rich wraps long lines
    assert proc.returncode == 1, out
    assert problem in out, out
    assert fix in out, out
    assert "Traceback" not in proc.stderr


def test_root_is_allowed_where_the_track_allows_it(images, env, tmp_path):
    """The same root-only image passes on a track with allow_root (caps from a real API)."""
    from tests.api_helpers import shared_app
    from tests.cli_helpers import ThreadServer

    import httpx

    token = "sa_check_organizer_token"
    from api.settings import Settings

    s = Settings(data_dir=tmp_path / "api", bootstrap_organizer_token=token)
    with ThreadServer(shared_app(s, migrate=True)) as server:
        spec = {"slug": "chk", "title": "check", "demo": True, "tracks": [  # default test set: tiny
            {"slug": "rooty", "title": "root ok", "allow_root": True, "case_timeout_s": 120},
            {"slug": "strict", "title": "no root"}]}
        r = httpx.post(f"{server.url}/api/challenges", json=spec, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 201, r.text
        e = {**env, "SEGARENA_URL": server.url, "SEGARENA_CHALLENGE": "chk"}
        ok = run_cli("check", images["root_only"], "--track", "rooty", "--cases", "1", env=e, timeout=300)
        bad = run_cli("check", images["root_only"], "--track", "strict", "--cases", "1", env=e, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "120 s per case" in " ".join(ok.stdout.split()), "the caps come from the track"
    assert bad.returncode == 1 and "uid 1000" in bad.stdout


def test_archive_is_loaded_checked_and_removed(images, env, docker_client, tmp_path):
    """An archive file: inspected like the server does, loaded, run, and the image removed afterwards."""
    import docker

    tag = "segarena-test/check-archive:latest"
    docker_client.images.get(images["good"]).tag(tag)
    archive = tmp_path / "good.tar"
    with open(archive, "wb") as fh:
        for chunk in docker_client.images.get(tag).save(named=True):
            fh.write(chunk)
    docker_client.images.remove(tag)  # only the tag goes: the layers stay, like a participant's engine
    image_id = docker_client.images.get(images["good"]).id
    proc = run_cli("check", str(archive), "--offline", "--cases", "1", env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert docker_client.images.get(image_id)  # it was present before: not removed
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(tag)

    bad = tmp_path / "not-an-image.tar.gz"
    bad.write_bytes(b"hello")
    proc = run_cli("check", str(bad), "--offline", env=env)
    assert proc.returncode == 1 and "is not an image archive SegArena accepts" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1


def test_missing_archive_is_one_line(env):
    proc = run_cli("check", "/nonexistent/team.tar.gz", "--offline", env=env)
    assert proc.returncode == 1 and proc.stderr.startswith("error: /nonexistent/team.tar.gz: no such file")


def test_unit_pick_cases_alternates_dimensions(cache):
    from data_manifests import materialize
    from segarena.check import pick_cases

    manifest, _ = materialize("tiny", cache / "samples")
    picked = pick_cases(manifest, 4)
    assert [c.dim for c in picked] == [3, 2, 3, 2]
    assert len({c.modality for c in picked}) == 4
