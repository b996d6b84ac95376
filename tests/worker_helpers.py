"""Helpers for the worker tests: test images, a tiny test set, DB rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BEHAVIOUR_DIR = ROOT / "tests" / "images" / "behaviour"  # the one build context of every test image
IMAGE_REPO = "segarena-test/behaviour"


_BUILT: dict[tuple, str] = {}  # (name, base image, build extras) -> image id, built once per test session


def import_tiny_image(client, tag: str, files: dict[str, bytes] | None = None, *, labels: dict[str, str] | None = None
                      ) -> None:
    """``docker import`` of a one-layer image holding ``files`` (none: an empty layer) as ``tag``, with ``labels``:
    an image the engine has in a moment, for tests of what is done with images rather than what runs in them."""
    import io
    import tarfile

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tf:
        for name, data in (files or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    repository, _, name = tag.rpartition(":")
    changes = [f"LABEL {k}={v}" for k, v in (labels or {}).items()]
    client.api.import_image_from_data(layer.getvalue(), repository=repository, tag=name, changes=changes)


def build_test_image(client, base_image: str, name: str, *, salt: str | None = None, **extra: object) -> str:
    """Build the test image of behaviour ``name`` (tests/behaviours.py) from the local base; returns its id.

    One build context and Dockerfile (tests/images/behaviour) for every behaviour; the tag is
    ``segarena-test/behaviour:<name>``. ``extra`` are further build args (``DELAY_S``, ``LISTENER_PORT``); ``salt``
    labels the image so that its id is new (tests that must load an image the engine does not know yet).
    Built once per session (several modules use the same images); a later call only checks that the tag still
    names that image (a test may have removed it) and rebuilds otherwise. The engine's build cache makes a rebuild
    of an unchanged image cheap (the layers every behaviour shares come first), and a changed script is never
    served stale across sessions.
    """
    import docker

    from tests.behaviours import build_args, build_target

    suffix = "".join(f"-{k.lower()}{v}" for k, v in sorted(extra.items())) + (f"-{salt[:12]}" if salt else "")
    tag = f"{IMAGE_REPO}:{name}{suffix}"
    key = (name, base_image, tuple(sorted(extra.items())), salt)
    known = _BUILT.get(key)
    if known is not None:
        try:
            if client.images.get(tag).id == known:
                return known
        except docker.errors.ImageNotFound:
            pass
    labels = {"segarena.base": base_image, **({"segarena.test.salt": salt} if salt else {})}
    img, _ = client.images.build(path=str(BEHAVIOUR_DIR), tag=tag, rm=True, forcerm=True, target=build_target(name),
                                 buildargs={"BASE_IMAGE": base_image, **build_args(name, **extra)}, labels=labels,
                                 network_mode="none")
    _BUILT[key] = img.id
    return img.id


class BehaviourImages(dict):
    """behaviour name -> image id, each built on first use (:func:`build_test_image`)."""

    def __init__(self, client, base_image: str) -> None:
        super().__init__()
        self.client, self.base_image = client, base_image

    def __missing__(self, name: str) -> str:
        self[name] = image_id = build_test_image(self.client, self.base_image, name)
        return image_id


def save_archive(client, image_id: str, dest: Path) -> Path:
    """``docker save`` the image into ``dest`` (streamed)."""
    image = client.images.get(image_id)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as fh:
        for chunk in image.save(named=True):
            fh.write(chunk)
    return dest


# ------------------------------------------------------------------------------------------------
# a tiny test set in the real manifest schema (fixture generator, not data_manifests' sets)


def make_testset(dest: Path, *, n2d: int = 2, n3d: int = 1) -> Path:
    """Write a tiny test set (inputs/, gts/, manifest.json) under ``dest``; returns the manifest path."""
    from data_manifests._npz import write_npz
    from data_manifests.manifest import build_case, finalize_cases, write_manifest
    from data_manifests.schema import TestSetManifest

    rng = np.random.default_rng(7)
    cases = []
    for i in range(n2d):
        cid = f"2DBox_US_{i:04d}"
        gts = np.zeros((48, 64), np.uint8)
        gts[10:25, 8:30] = 1
        gts[30:44, 35 + i:60] = 2
        imgs = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
        boxes = np.array([[8, 10, 29, 24], [35 + i, 30, 59, 43]])
        write_npz(dest / "inputs" / f"{cid}.npz", imgs=imgs, boxes=boxes)
        write_npz(dest / "gts" / f"{cid}.npz", gts=gts)
        cases.append(build_case(case_id=cid, modality="US", data_root=dest, input_path=f"inputs/{cid}.npz",
                                gt_path=f"gts/{cid}.npz", shape=[48, 64], spacing=[1.0, 1.0],
                                names=["a", "b"], voxels=[int((gts == 1).sum()), int((gts == 2).sum())]))
    for i in range(n3d):
        cid = f"3DBox_CT_{i:04d}"
        gts = np.zeros((8, 32, 32), np.uint8)
        gts[2:6, 8:20, 10:24] = 1
        imgs = (rng.random((8, 32, 32)) * 255).astype(np.uint8)
        boxes = np.array([[10, 8, 2, 23, 19, 5]])
        spacing = np.array([0.8, 0.8, 2.5])
        write_npz(dest / "inputs" / f"{cid}.npz", imgs=imgs, boxes=boxes, spacing=spacing)
        write_npz(dest / "gts" / f"{cid}.npz", gts=gts, spacing=spacing)
        cases.append(build_case(case_id=cid, modality="CT", data_root=dest, input_path=f"inputs/{cid}.npz",
                                gt_path=f"gts/{cid}.npz", shape=[8, 32, 32], spacing=[2.5, 0.8, 0.8],
                                names=["liver"], voxels=[int((gts == 1).sum())]))
    manifest = TestSetManifest(id="worker-tests", version="1", description="worker test fixture",
                               cases=finalize_cases(cases))
    return write_manifest(manifest, dest / "manifest.json")


# ------------------------------------------------------------------------------------------------
# DB rows


def seed_track(session, *, testset: str, slug: str = "main", **track_fields):
    """A challenge with one track; returns the track."""
    from tests import factories

    ch = factories.challenge(session, slug=f"ch-{slug}", title="Worker test challenge", description="", demo=False)
    values = dict(memory_mb=256, cpus=1.0, case_timeout_s=30, total_timeout_s=600, pids_limit=64, tmpfs_mb=64,
                  metric_profile="default")
    values.update(track_fields)
    return factories.track(session, challenge=ch, slug=slug, title=slug, testset=testset, **values)


def seed_submission(session, *, track, team_name: str, image_id: str, archive: Path, attempt: int = 1,
                    created_at=None):
    """A team (reused by name), a queued submission and its queued Run; returns (submission, run)."""
    from tests import factories

    team = factories.team(session, team_name, reuse=True)
    return factories.submission(session, track=track, team=team, image_id=image_id, archive=archive,
                                attempt=attempt, created_at=created_at)


def segarena_containers(client) -> list:
    """Containers (any state) carrying SegArena's run label."""
    return client.api.containers(all=True, filters={"label": "segarena.run"})
