"""SegArena evaluator: exact, fast DSC and NSD, case scoring under named profiles, I/O, aggregation.

Pure scoring code: imports numpy, scipy, nibabel, pandas and edt only.

Public API
----------
dice(gt, pred) -> float
nsd(gt, pred, spacing, tolerance) -> float
score_case(gt_labels, pred_labels, *, spacing, profile="default", labels=None, tolerance=None) -> CaseScore
PROFILES, get_profile(name) -> Profile
Submodules: ``evaluator.io`` (loading), ``evaluator.aggregate`` (per modality / overall),
``evaluator.cli`` (``segarena score``).
"""

from .metrics import dice, nsd, surface_overlap_of
from .profiles import PROFILES, Profile, get_profile
from .scoring import CaseScore, ClassScore, score_case

__all__ = [
    "dice",
    "nsd",
    "surface_overlap_of",
    "score_case",
    "CaseScore",
    "ClassScore",
    "PROFILES",
    "Profile",
    "get_profile",
]
