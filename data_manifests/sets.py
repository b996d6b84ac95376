"""Built-in test sets (committed manifests whose data the generator reproduces on demand) and the one rule
that turns a track's test-set name into a manifest and its data.

A test-set name is a built-in set's name (``tiny``, ``small``: :func:`builtin_sets`) or else the path of a
manifest JSON file on the trusted host (any file name; its data lie under the manifest's folder). Track
validation (:func:`check_testset`), run start and scoring (:func:`open_testset`) and the leaderboard's size
classes (:func:`manifest_path_for`) all use this rule, so a name that passes validation is one the
scorer can open.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from .generator import generate
from .manifest import ManifestError, dump_manifest, load_manifest, verify_files
from .schema import TestSetManifest

__all__ = ["SETS_DIR", "builtin_sets", "builtin_manifest_path", "materialize", "manifest_path_for",
           "check_testset", "open_testset"]

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


def manifest_path_for(name: str) -> Path:
    """The manifest file test set ``name`` stands for: a built-in set's committed manifest, else ``name`` as a path
    (which may not exist: :func:`check_testset` says so)."""
    if not name or not name.strip():
        raise ManifestError(f"no test set given: name a built-in set ({', '.join(builtin_sets())}) or the path of "
                            "a manifest JSON on the server")
    if name in builtin_sets():
        return builtin_manifest_path(name)
    return Path(name)


def check_testset(name: str) -> TestSetManifest:
    """The manifest of test set ``name``, read and validated (its data files are not checked here: that happens
    once, when a run opens the set); :class:`ManifestError` naming the fix otherwise."""
    path = manifest_path_for(name)
    try:
        return load_manifest(path, verify=False)
    except ManifestError as exc:
        first = str(exc).splitlines()[0][:300]
        raise ManifestError(f"test set {name!r} is neither a built-in set ({', '.join(builtin_sets())}) nor a "
                            f"readable manifest JSON on the server: {first}") from None


def open_testset(name: str, builtin_dest: Callable[[str], str | os.PathLike[str]]) -> tuple[TestSetManifest, Path]:
    """(manifest, data root) of test set ``name``, every file checked against the manifest: a built-in set is
    materialized under ``builtin_dest(name)`` (:func:`materialize`; called for built-in sets only), a manifest
    path's data root is its folder."""
    if name in builtin_sets():
        return materialize(name, builtin_dest(name))
    path = manifest_path_for(name)
    return load_manifest(path, data_root=path.parent), path.parent


def materialize(name: str, dest: str | os.PathLike[str]) -> tuple[TestSetManifest, Path]:
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
                pass
            else:
                shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, root)
        except OSError:
            pass                    # another process put a set there first: check theirs below
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    verify_files(committed, root)
    return committed, root
