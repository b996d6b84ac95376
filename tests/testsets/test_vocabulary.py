"""Modalities and size classes have one definition (data_manifests.schema), used by the manifests, the run
summaries and the leaderboard."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from data_manifests.schema import MODALITIES, SIZE_CLASSES, modality_order
from evaluator.runs import summarize

ROOT = Path(__file__).resolve().parents[2]


def test_constants() -> None:
    assert SIZE_CLASSES == ("small", "medium", "large")
    assert MODALITIES[:9] == ("CT", "MR", "PET", "US", "X-Ray", "Endoscopy", "Fundus", "Microscopy", "OCT")
    assert modality_order({"Zebra", "US", "CT", "Alpha"}) == ["CT", "US", "Alpha", "Zebra"]


def test_run_summary_groups_size_classes_in_the_given_order() -> None:
    cases = [SimpleNamespace(status="ok", dsc=d, nsd=d, runtime_s=1.0, modality="CT", size_class=k)
             for d, k in ((0.9, "large"), (0.5, "small"), (0.7, "tiny-extra"), (0.8, ""))]
    out = summarize(cases, time_limit_s=60.0, size_classes=SIZE_CLASSES)
    assert list(out["by_size_class"]) == ["small", "large", "tiny-extra"]  # given order, then others; none for ""
    assert out["by_size_class"]["large"]["dsc"] == 0.9


def test_no_second_copy_of_the_vocabulary() -> None:
    """A literal list of the size classes or of the canonical modalities outside data_manifests/schema.py fails."""
    pattern = re.compile(r"""["']small["']\s*,\s*["']medium["']\s*,\s*["']large["']"""
                         r"""|["']CT["']\s*,\s*["']MR["']\s*,\s*["']PET["']""")
    offenders = []
    for package in ("api", "leaderboard_web", "evaluator", "data_manifests", "segarena", "worker"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "data_manifests/schema.py" or "migrations" in path.parts:
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{rel}:{n}: {line.strip()}")
    assert offenders == []


def test_the_package_resolves_every_public_name_on_first_use():
    """data_manifests imports its names lazily (PEP 562): each name of __all__ resolves to its submodule's object,
    dir() lists them, and an unknown name is an AttributeError (not a KeyError or an import of something else)."""
    import importlib

    import data_manifests

    assert set(data_manifests.__all__) <= set(dir(data_manifests))  # before any is resolved (then cached)
    for name in data_manifests.__all__:
        home = importlib.import_module(f"data_manifests.{data_manifests._HOME[name]}")
        assert getattr(data_manifests, name) is getattr(home, name), name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = data_manifests.nope
