"""The test sets as the trusted side sees them (manifest + data root), loaded once per process."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

__all__ = ["load_testset", "forget_testsets"]

_lock = threading.Lock()
_cache: dict[tuple[str, str], tuple[Any, Path, dict[str, Any]]] = {}
_MAX = 16


def _load(name: str, storage: Any) -> tuple[Any, Path]:
    """(manifest, data_root) of a track's test set by the one lookup rule (:func:`data_manifests.open_testset`)."""
    from data_manifests import open_testset

    return open_testset(name, storage.testset_dir)  # built-in sets only: a path is never a storage folder


def load_testset(name: str, storage: Any) -> tuple[Any, Path, dict[str, Any]]:
    """(manifest, data_root, {case id: case entry}); verified once, then cached (test sets are immutable)."""
    key = (str(Path(storage.root)), name)
    with _lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    manifest, root = _load(name, storage)
    entry = (manifest, Path(root), {case.id: case for case in manifest.cases})
    with _lock:
        if len(_cache) >= _MAX:
            _cache.pop(next(iter(_cache)))
        _cache[key] = entry
    return entry


def forget_testsets() -> None:
    with _lock:
        _cache.clear()
