"""Named, versioned metric profiles. Every score records ``name@version``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Profile", "PROFILES", "REFERENCE_VALUE_PROFILES", "get_profile"]


@dataclass(frozen=True)
class Profile:
    """A metric profile: how a case is turned into per-class and case scores."""

    name: str
    version: int
    tolerance: float
    description: str

    @property
    def id(self) -> str:
        """``name@version``, the string stored with every result."""
        return f"{self.name}@{self.version}"


PROFILES: dict[str, Profile] = {
    "default": Profile(
        name="default",
        version=1,
        tolerance=2.0,
        description=(
            "SegArena's definition. Classes are the prompted labels (1..number of boxes). DSC per "
            "class; NSD = surface Dice at tolerance 2.0 (mm in 3D, spacing units in 2D), surfel-area "
            "weighted, tolerance inclusive, spacing in array-axis order, 2D scored as true 2D "
            "contours. Empty masks: both empty -> class skipped (NaN, excluded from the case mean); "
            "exactly one empty -> DSC 0 and NSD 0. Case score = mean over the non-skipped classes."
        ),
    ),
    "cvpr24": Profile(
        name="cvpr24",
        version=1,
        tolerance=2.0,
        description=(
            "Bit-compatible with the CVPR 2024 reference script (LiteMedSAM evaluation/"
            "compute_metrics.py), quirks included: classes 1..gt.max(); a class absent from both "
            "masks gives DSC NaN and so a NaN case DSC; case NSD computed only if the case DSC > 0.2, "
            "else 0; 2D masks scored as (H, W, 1) volumes with spacing (1, 1, 1); 3D with the spacing "
            "as stored in the ground-truth file; case values rounded to 4 decimals. As the reference, a "
            "float or negative-valued prediction is scored (a voxel counts for class i when its value "
            "equals i) rather than refused, and a label of 1..gt.max() absent from both masks makes "
            "the case DSC undefined (NaN), shown as undefined."
        ),
    ),
    "cvpr25": Profile(
        name="cvpr25",
        version=1,
        tolerance=2.0,
        description=(
            "Bit-compatible with the CVPR 2025 interactive reference (CVPR25_iter_eval.py, "
            "JunMa11/CVPR-MedSegFMCompetition): classes = the distinct ground-truth values without "
            "the smallest (background); case DSC = mean over them (NaN propagates); case NSD "
            "computed only if the case DSC > 0.2, else 0, with the spacing as stored; 2D as cvpr24 "
            "((H, W, 1), spacing (1, 1, 1)); nothing rounded; float or negative predictions scored as "
            "the reference (equality with each class). Clicks on unit spacing (the reference ignores "
            "spacing); DSC_AUC/NSD_AUC = trapezoid over the click iterations (evaluator.interactive)."
        ),
    ),
}

#: Profiles that score a float or negative-valued prediction as their reference script did (a voxel counts for
#: class i when its value equals i) instead of refusing it.
REFERENCE_VALUE_PROFILES: frozenset[str] = frozenset({"cvpr24", "cvpr25"})


def get_profile(name: str | Profile) -> Profile:
    """Look up a profile by ``name`` or ``name@version``; raises ``ValueError`` if unknown."""
    if isinstance(name, Profile):
        return name
    base, _, version = str(name).partition("@")
    prof = PROFILES.get(base)
    if prof is None or (version and version != str(prof.version)):
        known = ", ".join(p.id for p in PROFILES.values())
        raise ValueError(f"unknown metric profile {name!r}; known profiles: {known}")
    return prof
