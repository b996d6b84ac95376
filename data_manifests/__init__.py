"""Test-set manifests, the synthetic generator and the importer for real challenge data.

Public entry points: :func:`load_manifest`, :func:`generate`, :func:`materialize`,
:func:`import_dir`, :func:`preview_manifest` and the schema classes.

The names are imported on first use (PEP 562): ``data_manifests.schema`` alone (what the API and the leaderboard
need) does not load the generator's numpy and scipy, a fifth of the API server's start-up.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the type checker sees; at run time __getattr__ imports them
    from .generator import GENERATOR_VERSION, SIZES, generate
    from .importer import ImportResult, import_dir
    from .manifest import (
        ManifestError, boxes_from_labels, dump_manifest, load_manifest, verify_files, write_manifest,
    )
    from .migrate import migrate_manifest, upgrade_manifest
    from .points import interior_point, label_points
    from .preview import preview_manifest
    from .schema import (
        MODALITIES, SCHEMA_VERSION, SIZE_CLASSES, CaseEntry, FileRef, GeneratorInfo, LabelInfo, TestSetManifest,
        modality_order,
    )
    from .sets import builtin_sets, check_testset, manifest_path_for, materialize, open_testset

_HOME: dict[str, str] = {
    **dict.fromkeys(("GENERATOR_VERSION", "SIZES", "generate"), "generator"),
    **dict.fromkeys(("ImportResult", "import_dir"), "importer"),
    **dict.fromkeys(("ManifestError", "boxes_from_labels", "dump_manifest", "load_manifest", "verify_files",
                     "write_manifest"), "manifest"),
    **dict.fromkeys(("migrate_manifest", "upgrade_manifest"), "migrate"),
    **dict.fromkeys(("interior_point", "label_points"), "points"),
    "preview_manifest": "preview",
    **dict.fromkeys(("MODALITIES", "SCHEMA_VERSION", "SIZE_CLASSES", "CaseEntry", "FileRef", "GeneratorInfo",
                     "LabelInfo", "TestSetManifest", "modality_order"), "schema"),
    **dict.fromkeys(("builtin_sets", "check_testset", "manifest_path_for", "materialize", "open_testset"), "sets"),
}

__all__ = [
    "GENERATOR_VERSION", "SIZES", "MODALITIES", "SIZE_CLASSES", "modality_order",
    "FileRef", "LabelInfo", "CaseEntry", "GeneratorInfo", "TestSetManifest",
    "ManifestError", "load_manifest", "verify_files", "dump_manifest", "write_manifest", "boxes_from_labels",
    "generate", "materialize", "builtin_sets", "check_testset", "open_testset",
    "manifest_path_for", "import_dir", "ImportResult", "preview_manifest",
    "SCHEMA_VERSION", "migrate_manifest", "upgrade_manifest", "interior_point", "label_points",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{home}", __name__), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
