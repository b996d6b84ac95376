"""The execution host's image cache: archives keyed by their sha256, ``docker load`` once per host.

* An image the engine already has (by its id, the config digest) is used as it is: nothing is
  downloaded or loaded.
* Otherwise its archive is taken from ``cache_dir/images/<sha256>.tar`` or downloaded there once
  (streamed, verified against the spec's sha256 and size; a mismatch deletes the file and fails as
  an infrastructure error, :class:`worker.client.DigestMismatch`), then loaded with
  :func:`worker.sandbox.load_image` (which checks that the archive loads as the announced image id).
* Loading holds a host-wide lock per image id (``image_lock_dir``, default
  ``/tmp/segarena-image-locks``), so two workers sharing one engine, even with separate cache
  directories, never load the same image at the same time: the second finds it loaded.
* The archive directory is bounded by ``cache_max_bytes``: least recently used archives (last use is
  stamped on the file's mtime at every use) are evicted first, never one in use — each use holds a
  shared ``flock`` on ``<sha256>.lock``, and eviction takes the exclusive lock without waiting or
  skips the archive. An archive larger than the whole bound is still used (and evicted afterwards).
* Engine images are bounded too. Each image this cache loads is recorded (``images/loaded/<key>.json``: image
  id and archive digest; mtime = last use). :meth:`ImageCache.prune_images` removes from the engine a loaded
  image whose archive was evicted, and the least recently used loaded images beyond ``cache_max_images`` —
  never one in use: a shard holds a shared host-wide ``flock`` on ``image_lock_dir/use-<key>.lock`` while it
  runs (:meth:`ImageCache.hold`; workers sharing one engine share that directory), removal takes it exclusively
  without waiting, and an image any container (running or not) was created from is kept. Images this cache did
  not load (found present: the base image, another worker's) are never removed by it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any
from collections.abc import Iterator

from . import sandbox
from .client import InfraError, WorkerClient

__all__ = ["ImageCache", "CacheEntry"]

log = logging.getLogger(__name__)

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
STALE_PART_S = 3600.0


def _key(image_id: str) -> str:
    """A file-name-safe key of an image id (lock and record names)."""
    return hashlib.sha256(image_id.encode()).hexdigest()[:32]


class CacheEntry:
    """An archive in the cache (for listings and tests)."""

    def __init__(self, path: Path, size: int, last_used: float) -> None:
        self.path, self.size, self.last_used = path, size, last_used

    @property
    def sha256(self) -> str:
        return self.path.stem

    def __repr__(self) -> str:
        return f"CacheEntry({self.sha256[:12]}, {self.size} B)"


def _open_locked(path: Path, mode: int) -> int:
    """An fd of ``path`` (created if needed) holding ``flock(mode)``; retries when the file was replaced
    or deleted while waiting (an evictor deletes lock files it holds exclusively)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, mode)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _release(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class ImageCache:
    """Image archives of one worker (``config.images_dir``) and loading into its engine."""

    def __init__(self, config: Any, client: WorkerClient, docker: Any = None) -> None:
        self.config = config
        self.client = client
        self._docker = docker
        self.root = Path(config.images_dir)
        self.lock_dir = Path(getattr(config, "image_lock_dir", "/tmp/segarena-image-locks"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.downloads = 0  # archives downloaded by this instance (for reports and tests)
        self.loads = 0  # docker loads done by this instance

    @property
    def max_bytes(self) -> int:
        return int(self.config.cache_max_bytes)

    # -- engine -------------------------------------------------------------------------------------
    def docker(self) -> Any:
        if self._docker is None:
            self._docker = sandbox.get_docker_client(self.config)
        return self._docker

    @property
    def max_images(self) -> int:
        return int(getattr(self.config, "cache_max_images", 10))

    def _present(self, image_id: str) -> Any | None:
        import docker as docker_mod

        try:
            return self.docker().images.get(image_id)
        except docker_mod.errors.ImageNotFound:
            return None
        except Exception as exc:
            if sandbox._is_engine_error(exc):
                raise sandbox.SandboxInfraError(f"Docker engine error while looking up {image_id}: {exc}") from exc
            raise

    @contextlib.contextmanager
    def _load_lock(self, image_id: str) -> Iterator[None]:
        try:
            self.lock_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.lock_dir, 0o1777)
        except OSError:
            pass
        fd = os.open(self.lock_dir / f"load-{_key(image_id)}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            _release(fd)

    def _use_lock(self, image_id: str) -> Path:
        try:
            self.lock_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.lock_dir, 0o1777)
        except OSError:
            pass
        return self.lock_dir / f"use-{_key(image_id)}.lock"

    @contextlib.contextmanager
    def hold(self, image_id: str) -> Iterator[None]:
        """Keep ``image_id`` in the engine while the context is open (a shard runs containers from it): a shared
        host-wide lock that :meth:`prune_images` (of any worker sharing ``image_lock_dir``) will not break."""
        fd = os.open(self._use_lock(image_id), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            _release(fd)

    # -- loaded images ------------------------------------------------------------------------------
    @property
    def loaded_dir(self) -> Path:
        return self.root / "loaded"

    def _record_loaded(self, image_id: str, sha256: str) -> None:
        self.loaded_dir.mkdir(parents=True, exist_ok=True)
        path = self.loaded_dir / f"{_key(image_id)}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"image_id": image_id, "sha256": sha256}))
        os.replace(tmp, path)

    def _touch_loaded(self, image_id: str) -> None:
        try:
            os.utime(self.loaded_dir / f"{_key(image_id)}.json")
        except OSError:
            pass  # not loaded by this cache

    def loaded_images(self) -> list[dict[str, Any]]:
        """The images this cache loaded and has not removed, least recently used first
        (``{image_id, sha256, last_used, path}``)."""
        out = []
        for p in self.loaded_dir.glob("*.json") if self.loaded_dir.is_dir() else []:
            try:
                rec = json.loads(p.read_text())
                out.append({"image_id": str(rec["image_id"]), "sha256": str(rec["sha256"]),
                            "last_used": p.stat().st_mtime, "path": p})
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return sorted(out, key=lambda r: r["last_used"])

    def prune_images(self, *, keep: str | None = None) -> list[str]:
        """Remove from the engine the loaded images whose archive was evicted, then the least recently used ones
        beyond ``cache_max_images``; never ``keep``, an image held by a shard (:meth:`hold`) or one a container
        was created from. Returns the removed image ids."""
        records = self.loaded_images()
        if not records:
            return []
        archived = {e.sha256 for e in self.entries()}
        excess = len(records) - self.max_images
        removed: list[str] = []
        for rec in records:
            over = excess > 0
            if rec["image_id"] == keep or (rec["sha256"] in archived and not over):
                continue
            if self._remove_image(rec["image_id"]):
                rec["path"].unlink(missing_ok=True)
                removed.append(rec["image_id"])
                excess -= 1
        return removed

    def _remove_image(self, image_id: str) -> bool:
        import docker as docker_mod

        try:
            fd = os.open(self._use_lock(image_id), os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a shard of this host runs it
            try:
                api = self.docker().api
                if api.containers(all=True, filters={"ancestor": image_id}):
                    return False
                api.remove_image(image_id, force=True)  # force: untag every tag the archive gave it
            except docker_mod.errors.ImageNotFound:
                pass  # gone already: forget it
            except Exception as exc:
                log.warning("image cache: could not remove image %s: %s", image_id[:19], exc)
                return False
            log.info("image cache: removed image %s from the engine", image_id[:19])
            return True
        finally:
            _release(fd)

    def ensure(self, image: dict[str, Any]) -> tuple[Any, bool]:
        """The engine's image for a shard spec's ``image`` (``sha256``, ``bytes``, ``image_id``, ``url``),
        downloading and loading it if the engine does not have it. Returns (image, loaded_now).

        Raises :class:`worker.client.InfraError` (download), :class:`worker.sandbox.SandboxInfraError`
        (engine) or :class:`worker.sandbox.ImageLoadError` (the verified archive does not load as the
        announced image)."""
        image_id = str(image["image_id"])
        found = self._present(image_id)
        if found is not None:
            self._touch_loaded(image_id)
            return found, False
        with self._load_lock(image_id):
            found = self._present(image_id)  # another worker of this host loaded it meanwhile
            if found is not None:
                return found, False
            with self.archive(image) as path:
                t0 = time.monotonic()
                loaded, now = sandbox.load_image(self.docker(), path, expected_id=image_id)
                if now:
                    self.loads += 1
                    self._record_loaded(image_id, path.stem)
                    log.info("loaded image %s in %.1f s", image_id[:19], time.monotonic() - t0)
        self.prune_images(keep=image_id)
        return loaded, now

    # -- archives -----------------------------------------------------------------------------------
    def path_of(self, sha256: str) -> Path:
        return self.root / f"{sha256}.tar"

    @contextlib.contextmanager
    def archive(self, image: dict[str, Any]) -> Iterator[Path]:
        """The verified archive of ``image`` in the cache (downloaded if absent), protected from
        eviction while the context is open."""
        sha = str(image["sha256"]).lower().removeprefix("sha256:")
        if not _SHA_RE.match(sha):
            raise InfraError(f"the shard spec names an invalid image sha256 {sha[:80]!r}")
        size = image.get("bytes")
        size = int(size) if size is not None else None
        path, lock = self.path_of(sha), self.root / f"{sha}.lock"
        url = image.get("url") or f"/api/worker/images/{sha}"
        try:
            while True:
                fd = _open_locked(lock, fcntl.LOCK_SH)
                if self._usable(path, size):
                    break
                _release(fd)
                fd = _open_locked(lock, fcntl.LOCK_EX)
                try:
                    if not self._usable(path, size):
                        path.unlink(missing_ok=True)
                        self.evict(reserve=size or 0)
                        self.client.download(url, path, sha256=sha, size=size)
                        self.downloads += 1
                    fcntl.flock(fd, fcntl.LOCK_SH)  # downgrade (not atomic: checked again below)
                except BaseException:
                    _release(fd)
                    raise
                if self._usable(path, size):
                    break
                _release(fd)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InfraError(f"the image cache {self.root} is full: {exc}") from exc
            raise InfraError(f"image cache error: {exc}") from exc
        try:
            os.utime(path)  # last use: the LRU key
            yield path
        finally:
            _release(fd)
            self.evict()  # the images of evicted archives go at the next prune_images (ensure calls it)

    @staticmethod
    def _usable(path: Path, size: int | None) -> bool:
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def entries(self) -> list[CacheEntry]:
        """The archives in the cache, least recently used first."""
        out = []
        for p in self.root.glob("*.tar"):
            if not _SHA_RE.match(p.stem):
                continue
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            out.append(CacheEntry(p, st.st_size, st.st_mtime))
        return sorted(out, key=lambda e: e.last_used)

    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries())

    def evict(self, reserve: int = 0) -> list[str]:
        """Delete least recently used archives not in use until the cache plus ``reserve`` bytes fits
        ``cache_max_bytes``; returns the evicted digests. Also removes stale partial downloads."""
        now = time.time()
        for part in self.root.glob(".*.part-*"):
            try:
                if now - part.stat().st_mtime > STALE_PART_S:
                    part.unlink()
            except OSError:
                pass
        entries = self.entries()
        total = sum(e.size for e in entries)
        evicted: list[str] = []
        for entry in entries:
            if total + reserve <= self.max_bytes:
                break
            lock = self.root / f"{entry.sha256}.lock"
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # in use (by this or another worker)
                try:
                    if os.fstat(fd).st_ino != os.stat(lock).st_ino:
                        continue
                except FileNotFoundError:
                    continue
                try:
                    entry.path.unlink()
                except FileNotFoundError:
                    pass
                lock.unlink(missing_ok=True)
                total -= entry.size
                evicted.append(entry.sha256)
                log.info("image cache: evicted %s (%d bytes)", entry.sha256[:12], entry.size)
            finally:
                try:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                finally:
                    os.close(fd)
        return evicted
