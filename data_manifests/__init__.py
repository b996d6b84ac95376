"""Test-set manifests, the synthetic generator and the importer for real challenge data.

Public entry points: :func:`load_manifest`, :func:`generate`, :func:`materialize`,
:func:`import_dir`, :func:`preview_manifest` and the schema classes.
"""

from .generator import GENERATOR_VERSION, SIZES, generate
from .importer import ImportResult, import_dir
from .manifest import ManifestError, boxes_from_labels, dump_manifest, load_manifest, verify_files, write_manifest
from .migrate import migrate_manifest, upgrade_manifest
from .points import interior_point, label_points
from .preview import preview_manifest
from .schema import (
    MODALITIES,
    SCHEMA_VERSION,
    SIZE_CLASSES,
    CaseEntry,
    FileRef,
    GeneratorInfo,
    LabelInfo,
    TestSetManifest,
    modality_order,
)
from .sets import builtin_sets, check_testset, manifest_path_for, materialize, open_testset

__all__ = [
    "GENERATOR_VERSION", "SIZES", "MODALITIES", "SIZE_CLASSES", "modality_order",
    "FileRef", "LabelInfo", "CaseEntry", "GeneratorInfo", "TestSetManifest",
    "ManifestError", "load_manifest", "verify_files", "dump_manifest", "write_manifest", "boxes_from_labels",
    "generate", "materialize", "builtin_sets", "check_testset", "open_testset",
    "manifest_path_for", "import_dir", "ImportResult", "preview_manifest",
    "SCHEMA_VERSION", "migrate_manifest", "upgrade_manifest", "interior_point", "label_points",
]
