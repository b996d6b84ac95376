"""The test-set manifest schema (pydantic v2), validated whenever a manifest is loaded.

Conventions
-----------
* ``FileRef.path`` is relative to the test set's *data root* (POSIX separators, no ``..``).
* ``CaseEntry.shape`` is the spatial shape of the image: ``[H, W]`` for 2D (colour channels
  are not part of it), ``[D, H, W]`` for 3D.
* ``CaseEntry.spacing`` is in **array-axis order**: ``[sz, sy, sx]`` in mm for a ``(D, H, W)``
  volume, ``[sy, sx]`` for a 2D image (``[1.0, 1.0]`` = pixel units, as the challenge scored
  2D). The 2024 challenge files stored ``spacing`` as ``(x, y, z)``; the importer converts.
* ``LabelInfo.size_class`` is the tertile of the structure's *relative size* (its voxel
  count divided by the image's voxel count) among all structures of the same dimensionality
  (2D or 3D) in the set. ``CaseEntry.size_class`` is the tertile of the case's *smallest*
  structure's relative size among cases of the same dimensionality — a "small" case is one
  whose hardest (smallest) target is among the smallest third. See
  :func:`data_manifests.manifest.assign_size_classes`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "MODALITIES",
    "SizeClass",
    "SIZE_CLASSES",
    "VOLUME_MODALITIES",
    "modality_order",
    "FileRef",
    "LabelInfo",
    "CaseEntry",
    "GeneratorInfo",
    "TestSetManifest",
    "SCHEMA_VERSION",
    "PRIVATE_SEED_MIN",
    "is_public_seed",
]

#: Modalities of the reference challenge's final test tables, then the extensions.
MODALITIES: tuple[str, ...] = (
    "CT", "MR", "PET", "US", "X-Ray", "Endoscopy", "Fundus", "Microscopy", "OCT",
    "Dermoscopy", "Mammography",
)

#: the modalities whose cases are volumes (3D: ``3DBox_*``) in the reference challenge; the others are 2D images
VOLUME_MODALITIES: tuple[str, ...] = MODALITIES[:3]

SizeClass = Literal["small", "medium", "large"]
#: the size classes (tertiles of relative structure size), smallest first: the one definition the manifests,
#: the run summaries (``api.execution.scoring``) and the leaderboard use
SIZE_CLASSES: tuple[SizeClass, ...] = get_args(SizeClass)


def modality_order(modalities: Iterable[str]) -> list[str]:
    """Modalities in the reference challenge's table order (:data:`MODALITIES`), unknown ones last, sorted."""
    present = set(modalities)
    return [m for m in MODALITIES if m in present] + sorted(present - set(MODALITIES))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class FileRef(_Strict):
    """A file of the test set, relative to the data root, with its checksum and size."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)

    @field_validator("path")
    @classmethod
    def _relative(cls, v: str) -> str:
        if not v or v.startswith("/") or "\\" in v or ".." in v.split("/"):
            raise ValueError(f"path must be relative to the data root, POSIX style, no '..': {v!r}")
        return v


class LabelInfo(_Strict):
    """One labelled structure: label value ``i`` answers box ``i`` (1-based)."""

    value: int = Field(ge=1)
    name: str
    voxels: int = Field(ge=0)
    size_class: SizeClass
    point: list[int] | None = Field(
        default=None,
        description="Point prompt (schema 2): the structure's voxel farthest from its border, array-index order "
                    "([z, y, x] in 3D, [y, x] in 2D; data_manifests.points). None only for an empty structure.",
    )


class CaseEntry(_Strict):
    """One test case: its input file (no ground truth) and its ground-truth file."""

    id: str = Field(pattern=r"^[23]DBox_[A-Za-z0-9-]+_[A-Za-z0-9_.-]+$")
    modality: str
    dim: Literal[2, 3]
    input: FileRef
    gt: FileRef
    shape: list[int]
    spacing: list[float]
    labels: list[LabelInfo]
    size_class: SizeClass

    @model_validator(mode="after")
    def _consistent(self) -> CaseEntry:
        if not self.id.startswith(f"{self.dim}DBox_"):
            raise ValueError(f"case {self.id}: id prefix does not match dim={self.dim}")
        if len(self.shape) != self.dim or any(n <= 0 for n in self.shape):
            raise ValueError(f"case {self.id}: shape {self.shape} is not a {self.dim}D spatial shape")
        if len(self.spacing) != self.dim or any(s <= 0 for s in self.spacing):
            raise ValueError(f"case {self.id}: spacing {self.spacing} must have {self.dim} positive values")
        values = [lab.value for lab in self.labels]
        if values != list(range(1, len(values) + 1)):
            raise ValueError(f"case {self.id}: label values must be 1..K in order, got {values}")
        if self.input.path == self.gt.path:
            raise ValueError(f"case {self.id}: input and ground truth must be different files")
        return self


#: Seeds below this are public: the built-in sets use seed 0, and anyone with the (open) generator can
#: regenerate every small seed's set and so learn its ground truth. A private seed is a random number at
#: or above it (``segarena testset generate`` without ``--seed`` draws one).
PRIVATE_SEED_MIN = 2**32


def is_public_seed(seed: int) -> bool:
    """True when a set generated with ``seed`` has public ground truth (anyone can regenerate it)."""
    return seed < PRIVATE_SEED_MIN


class GeneratorInfo(_Strict):
    """How a synthetic set was made, so it can be regenerated byte for byte."""

    name: str = "segarena-synth"
    version: str
    size: str
    seed: int
    public_seed: bool = Field(default=True, description="The seed is public or guessable (see is_public_seed): "
                                                       "anyone can regenerate the set, ground truth included.")
    box_jitter: int = 0
    gray_as_rgb: bool = False

    @model_validator(mode="before")
    @classmethod
    def _derive_public(cls, data: Any) -> Any:
        # manifests written before the field existed: decide from the seed
        if isinstance(data, dict) and "public_seed" not in data and isinstance(data.get("seed"), int):
            data = {**data, "public_seed": is_public_seed(data["seed"])}
        return data


#: Manifest schema version written today. 1 -> 2: ``LabelInfo.point`` (point prompts) required for every non-empty
#: structure; version-1 manifests still load and are upgraded by ``data_manifests.migrate``.
SCHEMA_VERSION = 2


def _check_points(c: CaseEntry) -> None:
    for lab in c.labels:
        if lab.point is None:
            if lab.voxels > 0:
                raise ValueError(f"case {c.id}: label {lab.value} has no point prompt (schema version 2 needs one per "
                                 "non-empty structure; upgrade with data_manifests.migrate)")
            continue
        if len(lab.point) != c.dim or any(not 0 <= v < n for v, n in zip(lab.point, c.shape, strict=True)):
            raise ValueError(f"case {c.id}: label {lab.value} point {lab.point} is not a voxel of shape {c.shape}")


class TestSetManifest(_Strict):
    """A test set: metadata, scoring profile and its cases."""

    __test__ = False  # not a pytest test class

    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    id: str
    version: str
    description: str
    metric_profile: str = "default"
    tolerance: float = Field(default=2.0, gt=0)
    generator: GeneratorInfo | None = None
    notes: list[str] = Field(default_factory=list)
    cases: list[CaseEntry]

    @model_validator(mode="after")
    def _unique_ids(self) -> TestSetManifest:
        seen: set[str] = set()
        for c in self.cases:
            if self.schema_version >= 2:
                _check_points(c)
            if c.id in seen:
                raise ValueError(f"duplicate case id {c.id}")
            seen.add(c.id)
        return self

    def modalities(self) -> list[str]:
        """Modalities present, in the canonical order, unknown ones last (sorted)."""
        return modality_order(c.modality for c in self.cases)

    def case(self, case_id: str) -> CaseEntry:
        """The case with this id (KeyError if absent)."""
        for c in self.cases:
            if c.id == case_id:
                return c
        raise KeyError(case_id)
