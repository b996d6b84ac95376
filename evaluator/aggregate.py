"""Aggregation of per-case results: per modality and overall, mean and median.

Input: a pandas DataFrame with one row per case and at least the columns ``case``,
``modality``, ``dsc``, ``nsd``, ``runtime_s`` and ``status``. A case whose status is not
``"ok"`` (failed, timed out, invalid output, missing) scores DSC 0 and NSD 0. Cases
expected but absent from the frame can be added as ``missing`` with :func:`complete`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from .failures import charge_failures
from .io import CaseFormatError, parse_case_name

__all__ = ["OK", "REQUIRED_COLUMNS", "complete", "normalize", "by_modality", "overall", "summary"]

OK = "ok"
REQUIRED_COLUMNS = ("case", "modality", "dsc", "nsd", "runtime_s", "status")
_METRICS = ("dsc", "nsd", "runtime_s")


def _modality_of(case: str) -> str | None:
    try:
        return parse_case_name(case)[1]
    except CaseFormatError:
        return None


def complete(
    df: pd.DataFrame,
    *,
    expected_cases: Iterable[str] | None = None,
    manifest: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Add the missing columns and rows.

    ``manifest`` maps case -> modality and overrides the modality parsed from the case
    name; ``expected_cases`` adds a ``missing`` row for every case not in ``df``.
    """
    df = df.copy()
    if "case" not in df.columns:
        raise ValueError("the results need a 'case' column")
    for col, default in (("status", OK), ("runtime_s", np.nan), ("dsc", np.nan), ("nsd", np.nan)):
        if col not in df.columns:
            df[col] = default
    if expected_cases is not None:
        have = set(df["case"])
        extra = [c for c in expected_cases if c not in have]
        if extra:
            rows = pd.DataFrame({"case": extra, "status": "missing", "dsc": 0.0, "nsd": 0.0, "runtime_s": np.nan})
            df = pd.concat([df, rows], ignore_index=True) if len(df) else rows
    if "modality" not in df.columns:
        df["modality"] = None
    mods = []
    for case, mod in zip(df["case"], df["modality"]):
        if manifest is not None and case in manifest:
            mods.append(manifest[case])
        elif isinstance(mod, str) and mod:
            mods.append(mod)
        else:
            mods.append(_modality_of(str(case)) or "unknown")
    df["modality"] = mods
    return df


def normalize(df: pd.DataFrame, *, time_limit_s: float | None = None) -> pd.DataFrame:
    """Per-case rows with failures charged by :func:`evaluator.failures.charge_failures`: DSC 0 and NSD 0,
    runtime = ``time_limit_s`` (the limit the run was executed under) if given."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"the results miss the column(s) {missing}; call complete() first")
    df = df.copy()
    for col in _METRICS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    ok = (df["status"].astype(str) == OK).to_numpy()
    runtime = df["runtime_s"].to_numpy()
    # without a known limit a failed case keeps the runtime it recorded (NaN: unknown, left out of the means)
    limit = float(time_limit_s) if time_limit_s is not None else runtime
    charged = charge_failures(df["dsc"].to_numpy(), df["nsd"].to_numpy(), runtime, ok, limit)
    df["dsc"], df["nsd"], df["runtime_s"] = charged.dsc, charged.nsd, charged.runtime_s
    return df


def _stats(g: pd.DataFrame) -> dict[str, float]:
    out: dict[str, float] = {"n_cases": len(g), "n_failed": int((g["status"].astype(str) != OK).sum())}
    for col in _METRICS:
        vals = g[col].dropna()
        out[f"{col}_mean"] = float(vals.mean()) if len(vals) else np.nan
        out[f"{col}_median"] = float(vals.median()) if len(vals) else np.nan
    return out


def by_modality(df: pd.DataFrame, *, time_limit_s: float | None = None) -> pd.DataFrame:
    """One row per modality: n_cases, n_failed, mean and median of dsc, nsd and runtime_s.

    NaN values of successful cases (e.g. a case whose classes were all skipped) are left out
    of the statistics; failed and missing cases count as 0.
    """
    df = normalize(df, time_limit_s=time_limit_s)
    rows = [{"modality": mod, **_stats(g)} for mod, g in df.groupby("modality", sort=True)]
    return pd.DataFrame(rows, columns=_columns())


def overall(df: pd.DataFrame, *, time_limit_s: float | None = None, per_modality_first: bool = False) -> dict[str, Any]:
    """Overall statistics over all cases (or, with ``per_modality_first``, the mean of modality means)."""
    df = normalize(df, time_limit_s=time_limit_s)
    if not per_modality_first:
        return {"modality": "overall", **_stats(df)}
    per = by_modality(df)
    out = {"modality": "overall (mean of modalities)", "n_cases": int(per["n_cases"].sum()),
           "n_failed": int(per["n_failed"].sum())}
    for col in _METRICS:
        out[f"{col}_mean"] = float(per[f"{col}_mean"].mean())
        out[f"{col}_median"] = float(per[f"{col}_median"].median())
    return out


def summary(df: pd.DataFrame, *, time_limit_s: float | None = None) -> pd.DataFrame:
    """Per-modality rows followed by an ``overall`` row."""
    per = by_modality(df, time_limit_s=time_limit_s)
    tot = pd.DataFrame([overall(df, time_limit_s=time_limit_s)], columns=_columns())
    return pd.concat([per, tot], ignore_index=True) if len(per) else tot


def _columns() -> list[str]:
    cols = ["modality", "n_cases", "n_failed"]
    for col in _METRICS:
        cols += [f"{col}_mean", f"{col}_median"]
    return cols
