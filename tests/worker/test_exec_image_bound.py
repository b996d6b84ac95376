"""Engine images loaded by an execution host are bounded (worker/cache.py ``prune_images``) against the real
engine: when the archive cache evicts a digest, the image it loaded goes from the engine too; past
``cache_max_images`` the least recently used loaded images go; never an image a shard holds (``hold``, a
host-wide lock another worker of the host also respects), one a container was created from, or an image the
cache did not load itself."""

from __future__ import annotations

import hashlib
import time

import docker
import pytest

from tests.api_helpers import image_id_of, make_image_tar
from tests.exec_helpers import clean_env, fake_api, make_client, remove_image, worker_config  # noqa: F401
from worker.cache import ImageCache


def _tiny(tmp_path, fake_api, salt: str, layer_bytes: int = 50_000) -> dict:
    data = make_image_tar(tag=None, salt=salt, layer_bytes=layer_bytes)
    sha = hashlib.sha256(data).hexdigest()
    path = tmp_path / f"{salt}.tar"
    path.write_bytes(data)
    fake_api.add_image(path, sha)
    return {"sha256": sha, "bytes": len(data), "image_id": image_id_of(data), "url": f"/api/worker/images/{sha}"}


def _present(docker_client, image_id: str) -> bool:
    try:
        docker_client.images.get(image_id)
        return True
    except docker.errors.ImageNotFound:
        return False


@pytest.fixture
def specs(tmp_path, fake_api, docker_client):
    made = {s: _tiny(tmp_path, fake_api, f"bound-{s}-{time.time_ns()}") for s in ("a", "b", "c", "d")}
    yield made
    for spec in made.values():
        remove_image(docker_client, spec["image_id"])


def test_evicting_an_archive_removes_its_image_unless_held(worker_config, specs, make_client, docker_client):
    size = specs["a"]["bytes"]
    worker_config.cache_max_bytes = int(size * 2.5)  # room for two archives
    cache = ImageCache(worker_config, make_client(worker_config), docker=docker_client)
    for name in ("a", "b"):
        cache.ensure(specs[name])
        time.sleep(0.02)
    assert all(_present(docker_client, specs[n]["image_id"]) for n in ("a", "b"))
    with cache.hold(specs["a"]["image_id"]):  # a shard runs "a": its archive may go, its image stays
        cache.ensure(specs["c"])  # evicts the archive of "a" (least recently used)
        assert specs["a"]["sha256"] not in {e.sha256 for e in cache.entries()}
        assert _present(docker_client, specs["a"]["image_id"])
    cache.ensure(specs["d"])  # the next prune: "a" is no longer held; "b"'s archive is evicted now
    assert not _present(docker_client, specs["a"]["image_id"])
    assert not _present(docker_client, specs["b"]["image_id"])
    assert _present(docker_client, specs["c"]["image_id"]) and _present(docker_client, specs["d"]["image_id"])
    assert sorted(r["image_id"] for r in cache.loaded_images()) == sorted(
        [specs["c"]["image_id"], specs["d"]["image_id"]])
    # an image removed from the engine is loaded again from the API when a later shard needs it
    image, loaded_now = cache.ensure(specs["a"])
    assert loaded_now and image.id == specs["a"]["image_id"]


def test_the_number_of_loaded_images_is_bounded_and_containers_protect_theirs(worker_config, specs, make_client,
                                                                              docker_client):
    worker_config.cache_max_images = 2
    cache = ImageCache(worker_config, make_client(worker_config), docker=docker_client)
    cache.ensure(specs["a"])
    time.sleep(0.02)
    container = docker_client.api.create_container(specs["a"]["image_id"], command=["/nothing"])["Id"]
    try:
        cache.ensure(specs["b"])
        time.sleep(0.02)
        cache.ensure(specs["c"])  # three loaded, bound two: "a" is the oldest but a container uses it: "b" goes
        assert [_present(docker_client, specs[n]["image_id"]) for n in "abc"] == [True, False, True]
        assert len(cache.loaded_images()) == 2
    finally:
        docker_client.api.remove_container(container, force=True)
    time.sleep(0.02)
    cache.ensure(specs["d"])  # now "a" (least recently used, no container any more) goes; c and d stay
    assert [_present(docker_client, specs[n]["image_id"]) for n in "abcd"] == [False, False, True, True]
    assert len(cache.loaded_images()) == 2


def test_an_image_the_cache_did_not_load_is_never_removed(worker_config, specs, make_client, docker_client, tmp_path):
    worker_config.cache_max_images = 1
    first = ImageCache(worker_config, make_client(worker_config), docker=docker_client)
    first.ensure(specs["a"])  # loaded by another worker of this host (its own cache dir)
    other_cfg = worker_config.model_copy(update={"cache_dir": tmp_path / "cache-2"})
    other_cfg.ensure_dirs()
    second = ImageCache(other_cfg, make_client(other_cfg), docker=docker_client)
    _, loaded_now = second.ensure(specs["a"])
    assert not loaded_now  # found present: not this cache's to remove
    second.ensure(specs["b"])
    second.ensure(specs["c"])
    assert _present(docker_client, specs["a"]["image_id"])  # only first may remove it
    assert not _present(docker_client, specs["b"]["image_id"]) and _present(docker_client, specs["c"]["image_id"])
