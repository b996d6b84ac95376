"""The test sets as the trusted side sees them (manifest + data root), loaded once per process."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

__all__ = ["load_testset", "case_index", "forget_testsets"]

_lock = threading.Lock()
_cache: dict[tuple[str, str], tuple[Any, Path, dict[str, Any]]] = {}
_MAX = 16


def _load(name: str, storage: Any) -> tuple[Any, Path]:
    """(manifest, data_root) of a track's test set (a built-in name or a manifest path), as the runner does."""
    if name.endswith(".json"):
        from data_manifests.manifest import load_manifest

        path = Path(name)
        return load_manifest(path, data_root=path.parent), path.parent
    from data_manifests import materialize

    return materialize(name, storage.testset_dir(name))


def load_testset(name: str, storage: Any) -> tuple[Any, Path, dict[str, Any]]:
    """(manifest, data_root, {case id: case entry}); verified once, then cached (test sets are immutable)."""
    key = (str(Path(storage.root)), name)
    with _lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    manifest, root = _load(name, storage)
    entry = (manifest, Path(root), {c.id: c for c in manifest.cases})
    with _lock:
        if len(_cache) >= _MAX:
            _cache.pop(next(iter(_cache)))
        _cache[key] = entry
    return entry


def case_index(name: str, storage: Any) -> dict[str, Any]:
    return load_testset(name, storage)[2]


def forget_testsets() -> None:
    with _lock:
        _cache.clear()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
