"""Prompt, interactive and timing settings of a track: their values and defaults, in one place.

Pure constants (imported by the models, the schemas, the execution side and the CLI's help).

- ``prompt``: what the model is given at its first (or only) run of a case: ``box`` (the 2024 contract: ``boxes``),
  ``point`` (one interior point per structure from the test-set manifest, ``boxes`` removed) or ``box+point``.
- ``iterations`` (interactive tracks): refinement iterations after the first prompt, each with one more simulated
  click per imperfect class (the 2025 reference: 5).
- ``class_budget_s`` (interactive tracks): a case's time budget per class, summed over all its iterations (the
  2025 reference: 90 s per class); a case over budget keeps its last valid prediction and is marked.
- ``timing``: what a case's runtime measures: ``container`` (container start to exit, SegArena's default) or
  ``docker_run`` (the whole create + start + wait + remove span, as the 2024 script timed ``docker run --rm``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

__all__ = ["TRACK_DEFAULTS", "PROMPT_MODES", "DEFAULT_PROMPT", "DEFAULT_ITERATIONS", "MAX_ITERATIONS", "DEFAULT_CLASS_BUDGET_S",
           "MAX_CLASS_BUDGET_S", "TIMING_MODES", "DEFAULT_TIMING", "TIMING_LABELS", "PROMPT_LABELS"]

PROMPT_MODES = ("box", "point", "box+point")
DEFAULT_PROMPT: Final = "box"
PROMPT_LABELS = {"box": "box prompt", "point": "point prompt", "box+point": "box + point prompt"}

DEFAULT_ITERATIONS = 5  # CVPR25_iter_eval.py: n_clicks = 5 (bbox + 5 clicks = 6 runs per case)
MAX_ITERATIONS = 50
DEFAULT_CLASS_BUDGET_S = 90.0  # CVPR25_iter_eval.py: 90 s per class over all iterations
MAX_CLASS_BUDGET_S = 86400.0

TIMING_MODES = ("container", "docker_run")
DEFAULT_TIMING: Final = "container"
TIMING_LABELS = {"container": "container start to exit",
                 "docker_run": "whole docker run --rm span (create + start + remove), as the 2024 reference"}

#: Every track setting's default, the one place: the model's column defaults (``api.models.Track``), the schema
#: an organizer sends (``api.challenges.schemas.TrackCreate``) and the CLI's help read it. Enum-valued settings
#: are given by value (``kind``, ``row_policy``, ``visibility``, ``feedback``).
TRACK_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "kind": "main", "description": "", "testset": "tiny", "metric_profile": "default",
    "ranking_scheme": "rank_then_aggregate", "row_policy": "best", "visibility": "public",
    "quota_per_day": 5, "queue": "cpu", "cpus": 1.0, "memory_mb": 8192, "gpus": 0,
    "case_timeout_s": 60, "total_timeout_s": 3600, "pids_limit": 256, "tmpfs_mb": 1024, "allow_root": False,
    "repro_margin_dsc": 0.01, "repro_margin_nsd": 0.01, "feedback": "summary", "upload_grace_s": 900,
    "fail_fast_cases": 3, "shard_size": 0,
    "prompt": DEFAULT_PROMPT, "iterations": DEFAULT_ITERATIONS, "class_budget_s": DEFAULT_CLASS_BUDGET_S,
    "timing": DEFAULT_TIMING,
    # compute budgets per team (api/accounting, docs/accounting.md): none unless set
    "budget_cpu_s": None, "budget_gpu_s": None,
})
