"""Built-in test sets: committed manifests whose data the generator reproduces on demand."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from .generator import generate
from .manifest import ManifestError, dump_manifest, load_manifest, verify_files
from .schema import TestSetManifest

__all__ = ["SETS_DIR", "builtin_sets", "builtin_manifest_path", "materialize"]

SETS_DIR = Path(__file__).with_name("sets")


def builtin_sets() -> list[str]:
    """Names of the built-in sets (committed manifests under ``data_manifests/sets``)."""
    return sorted(p.stem for p in SETS_DIR.glob("*.json"))


def builtin_manifest_path(name: str) -> Path:
    """Path of the committed manifest of built-in set ``name``."""
    p = SETS_DIR / f"{name}.json"
    if not p.is_file():
        raise ManifestError(f"unknown built-in test set {name!r}; available: {', '.join(builtin_sets())}")
    return p


def materialize(name: str, dest: str | os.PathLike) -> tuple[TestSetManifest, Path]:
    """Make sure the data of built-in set ``name`` exists under ``dest``; return (manifest, data root).

    The data root is ``dest/name``. If files are missing or their checksums differ from the
    committed manifest, the set is regenerated (into a temporary folder, then swapped in, so
    concurrent callers never see half a set) from the committed manifest's size and seed, and
    checked again against the committed manifest.
    """
    committed = load_manifest(builtin_manifest_path(name), verify=False)
    root = Path(dest) / name
    try:
        verify_files(committed, root)
        return committed, root
    except ManifestError:
        pass
    g = committed.generator
    if g is None:
        raise ManifestError(f"built-in set {name!r} has no generator record; cannot regenerate it")
    Path(dest).mkdir(parents=True, exist_ok=True)
    tmp = Path(dest) / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        made = generate(g.size, g.seed, tmp, box_jitter=g.box_jitter, gray_as_rgb=g.gray_as_rgb)
        if dump_manifest(made) != dump_manifest(committed):
            differing = [c.id for c, d in zip(made.cases, committed.cases) if c != d]
            raise ManifestError(
                f"built-in set {name!r}: the generator on this machine does not reproduce the committed "
                f"manifest (first differing cases: {', '.join(differing[:3]) or 'case list'}); "
                "NumPy, SciPy or zlib may differ from the versions it was made with"
            )
        if root.exists():
            old = Path(dest) / f".{name}.old-{uuid.uuid4().hex[:8]}"
            try:
                os.replace(root, old)
            except OSError:
                old = None
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, root)
        except OSError:
            pass                    # another process put a set there first: check theirs below
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    verify_files(committed, root)
    return committed, root
