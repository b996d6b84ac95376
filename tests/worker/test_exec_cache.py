"""The execution host's image cache (worker/cache.py) against a real HTTP server and the real engine."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from tests.api_helpers import image_id_of, make_image_tar
from tests.exec_helpers import (clean_env, exec_image, fake_api, image_spec, load_events,  # noqa: F401
                                make_client, remove_image, worker_config)
from worker.cache import ImageCache
from worker.client import DigestMismatch


def _tiny(tmp_path, fake_api, salt: str, layer_bytes: int = 0) -> dict:
    data = make_image_tar(tag=None, salt=salt, layer_bytes=layer_bytes)
    sha = hashlib.sha256(data).hexdigest()
    path = tmp_path / f"{salt}.tar"
    path.write_bytes(data)
    fake_api.add_image(path, sha)
    return {"sha256": sha, "bytes": len(data), "image_id": image_id_of(data), "url": f"/api/worker/images/{sha}"}


@pytest.fixture
def new_cache(make_client):
    return lambda config, **kw: ImageCache(config, make_client(config), **kw)


def test_digest_mismatch_is_refused_and_deleted(worker_config, fake_api, tmp_path, new_cache):
    spec = _tiny(tmp_path, fake_api, "mismatch")
    fake_api.corrupt_images.add(spec["sha256"])  # more bytes than announced
    cache = new_cache(worker_config)
    with pytest.raises(DigestMismatch, match="announced"), cache.archive(spec):
        pass
    # same length, other bytes: the sha256 check (not the size check) refuses it
    fake_api.corrupt_images.clear()
    other = make_image_tar(tag=None, salt="mismatcx")
    assert len(other) == spec["bytes"]
    fake_api.images[spec["sha256"]].write_bytes(other)
    with pytest.raises(DigestMismatch, match="sha256"), cache.archive(spec):
        pass
    assert sorted(p.name for p in cache.root.iterdir() if not p.name.endswith(".lock")) == []
    assert cache.downloads == 0


def test_lru_eviction_under_a_tiny_bound_never_evicts_an_archive_in_use(worker_config, fake_api, tmp_path, new_cache):
    specs = {s: _tiny(tmp_path, fake_api, s, layer_bytes=100_000) for s in ("aaa", "bbb", "ccc")}
    size = specs["aaa"]["bytes"]
    worker_config.cache_max_bytes = int(size * 2.5)  # room for two archives
    cache = new_cache(worker_config)

    def use(name: str) -> None:
        with cache.archive(specs[name]) as path:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == specs[name]["sha256"]
        time.sleep(0.02)  # distinct last-use stamps

    def cached() -> set[str]:
        by_sha = {v["sha256"]: k for k, v in specs.items()}
        return {by_sha[e.sha256] for e in cache.entries()}

    use("aaa"), use("bbb")
    assert cached() == {"aaa", "bbb"} and cache.downloads == 2
    use("aaa")  # a hit: no download, aaa becomes the most recently used
    assert cache.downloads == 2
    use("ccc")  # evicts bbb, the least recently used
    assert cached() == {"aaa", "ccc"} and cache.downloads == 3
    assert cache.total_bytes() <= worker_config.cache_max_bytes

    # an archive in use is never evicted, even when the bound is exceeded
    worker_config.cache_max_bytes = int(size * 0.5)
    cache2 = new_cache(worker_config)  # another worker process sharing this cache dir
    with cache.archive(specs["aaa"]) as held:
        assert cache2.evict() == [specs["ccc"]["sha256"]]  # ccc is free, aaa is in use
        assert held.exists() and cached() == {"aaa"}
    assert cached() == set()  # released: evicted at once, the cache is over its bound
    assert not list(cache.root.glob("*.lock")), "lock files of evicted archives stay behind"


def test_load_once_per_host(worker_config, fake_api, docker_client, exec_image, tmp_path, new_cache):
    """Two workers with separate cache dirs on one engine: one download each at most, one docker load."""
    from worker.config import WorkerConfig

    spec = image_spec(exec_image)
    fake_api.add_image(exec_image["path"], exec_image["sha256"])
    remove_image(docker_client, exec_image["image_id"])
    other_config = WorkerConfig(**{**worker_config.model_dump(), "cache_dir": tmp_path / "cache2",
                                   "worker_name": "other"})
    caches = [new_cache(worker_config), new_cache(other_config)]
    results: list = [None, None]
    since = time.time() - 1
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, caches[i].ensure(spec))) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(r is not None and r[0].id == exec_image["image_id"] for r in results)
    assert sorted(r[1] for r in results) == [False, True]  # one loaded it, the other found it loaded
    assert sum(c.loads for c in caches) == 1
    assert sum(c.downloads for c in caches) == 1  # the second worker did not even download it
    # a later use: the engine has the image, nothing is downloaded or loaded
    image, loaded = caches[1].ensure(spec)
    assert not loaded and caches[1].downloads + caches[0].downloads == 1
    time.sleep(1.1)  # events are stamped in whole seconds
    events = load_events(docker_client, since, time.time())
    assert events.count(exec_image["image_id"]) == 1, events
    # the image runs (the thin archive restored a complete image)
    out = docker_client.containers.run(exec_image["image_id"], ["/bin/sh", "-c", "ls /workspace"], remove=True,
                                       network_mode="none")
    assert b"predict.sh" in out

    # the engine lost it (docker image prune): the cached archive is loaded again, not downloaded
    remove_image(docker_client, exec_image["image_id"])
    holder = caches[0] if caches[0].downloads else caches[1]  # the worker whose cache has the archive
    image, loaded = holder.ensure(spec)
    assert loaded and caches[0].downloads + caches[1].downloads == 1 and caches[0].loads + caches[1].loads == 2
