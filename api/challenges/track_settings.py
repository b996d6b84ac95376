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

__all__ = ["PROMPT_MODES", "DEFAULT_PROMPT", "DEFAULT_ITERATIONS", "MAX_ITERATIONS", "DEFAULT_CLASS_BUDGET_S",
           "MAX_CLASS_BUDGET_S", "TIMING_MODES", "DEFAULT_TIMING", "TIMING_LABELS", "PROMPT_LABELS"]

PROMPT_MODES = ("box", "point", "box+point")
DEFAULT_PROMPT = "box"
PROMPT_LABELS = {"box": "box prompt", "point": "point prompt", "box+point": "box + point prompt"}

DEFAULT_ITERATIONS = 5  # CVPR25_iter_eval.py: n_clicks = 5 (bbox + 5 clicks = 6 runs per case)
MAX_ITERATIONS = 50
DEFAULT_CLASS_BUDGET_S = 90.0  # CVPR25_iter_eval.py: 90 s per class over all iterations
MAX_CLASS_BUDGET_S = 86400.0

TIMING_MODES = ("container", "docker_run")
DEFAULT_TIMING = "container"
TIMING_LABELS = {"container": "container start to exit",
                 "docker_run": "whole docker run --rm span (create + start + remove), as the 2024 reference"}
