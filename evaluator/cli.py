"""``segarena score``: score a folder of predictions against a folder of ground truths."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import typer

from . import aggregate
from .io import CaseFormatError, load_ground_truth, load_npz, load_prediction, parse_case_name
from .profiles import PROFILES, get_profile
from .scoring import score_case

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Score predictions (DSC, NSD).")

_SUFFIXES = (".npz", ".nii.gz", ".nii")


class _UsageError(Exception):
    pass


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code=2)


def _case_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(_SUFFIXES))


def _prompted_labels(gt_path: Path) -> list[int] | None:
    """Labels 1..n_boxes when the ground-truth file carries the case's ``boxes``."""
    if not gt_path.name.endswith(".npz"):
        return None
    try:
        with zipfile.ZipFile(gt_path) as zf:
            if "boxes.npy" not in zf.namelist():
                return None
        boxes = load_npz(gt_path, required_keys=("boxes",))["boxes"]
    except (CaseFormatError, zipfile.BadZipFile, OSError):
        return None
    n = boxes.shape[0] if boxes.ndim == 2 else (1 if boxes.ndim == 1 and boxes.size else 0)
    return list(range(1, n + 1)) if n else None


def _modality(name: str) -> str:
    try:
        return parse_case_name(name)[1]
    except CaseFormatError:
        return "unknown"


def _num(v: float) -> float:
    return float("nan") if v is None else float(v)


def score_folders(pred: Path, gt: Path, *, profile: str = "default", tolerance: float | None = None,
                  spacing_order: str = "auto") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score every ground-truth case; returns (per-case rows, per-class rows)."""
    if not gt.is_dir():
        raise _UsageError(f"--gt {gt} is not a folder")
    if not pred.is_dir():
        raise _UsageError(f"--pred {pred} is not a folder")
    prof = get_profile(profile)
    gt_files = _case_files(gt)
    if not gt_files:
        raise _UsageError(f"no ground-truth files ({', '.join(_SUFFIXES)}) in {gt}")
    cases, classes = [], []
    for g in gt_files:
        try:
            gts, spacing = load_ground_truth(g, spacing_order=spacing_order)
        except CaseFormatError as exc:
            raise _UsageError(f"ground truth {exc}") from None
        row = {"case": g.name, "modality": _modality(g.name), "dim": gts.ndim, "status": "ok", "message": "",
               "dsc": math.nan, "nsd": math.nan, "runtime_s": math.nan, "profile": prof.id,
               "tolerance": prof.tolerance if tolerance is None else float(tolerance)}
        p = pred / g.name
        if not p.exists():
            row.update(status="missing", message=f"no output file {g.name}", dsc=0.0, nsd=0.0)
            cases.append(row)
            continue
        try:
            segs = load_prediction(p, expected_shape=gts.shape)
        except CaseFormatError as exc:
            row.update(status="invalid_output", message=str(exc), dsc=0.0, nsd=0.0)
            cases.append(row)
            continue
        labels = _prompted_labels(g) if prof.name == "default" else None
        score = score_case(gts, segs, spacing=spacing, profile=prof, labels=labels, tolerance=tolerance)
        row.update(dsc=score.dsc, nsd=score.nsd, profile=score.profile)
        cases.append(row)
        for lab, cs in score.per_class.items():
            classes.append({"case": g.name, "modality": row["modality"], "label": int(lab), "dsc": cs.dsc,
                            "nsd": cs.nsd, "gt_voxels": cs.gt_voxels, "pred_voxels": cs.pred_voxels,
                            "skipped": cs.skipped, "profile": score.profile})
    return pd.DataFrame(cases), pd.DataFrame(classes)


def _format_table(summary: pd.DataFrame) -> str:
    head = f"{'modality':<14}{'cases':>6}{'failed':>7}{'DSC mean':>10}{'DSC med':>9}{'NSD mean':>10}{'NSD med':>9}"
    lines = [head, "-" * len(head)]
    for _, r in summary.iterrows():
        def f(v: object) -> str:
            return "     nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:8.4f}"
        lines.append(f"{r['modality']!s:<14}{int(r['n_cases']):>6}{int(r['n_failed']):>7}"
                     f"  {f(r['dsc_mean'])} {f(r['dsc_median'])}  {f(r['nsd_mean'])} {f(r['nsd_median'])}")
    return "\n".join(lines)


@app.callback()
def _main() -> None:
    """Scoring tools of the SegArena evaluator."""


@app.command("score")
def score(
    pred: Path = typer.Option(..., "--pred", help="Folder of predictions (<case>.npz with 'segs')."),
    gt: Path = typer.Option(..., "--gt", help="Folder of ground truths (<case>.npz with 'gts', or NIfTI)."),
    profile: str = typer.Option("default", "--profile", help=f"Metric profile: {', '.join(PROFILES)}."),
    out: Path | None = typer.Option(None, "--out", help="Write per-case and per-class rows to this CSV."),
    tolerance: float | None = typer.Option(None, "--tolerance", help="NSD tolerance (default: the profile's)."),
    spacing_order: str = typer.Option("auto", "--spacing-order", help="How stored 3D spacing is read: auto, xyz, zyx."),
) -> None:
    """Score predictions against ground truth; print a per-modality table."""
    try:
        prof = get_profile(profile)
        if spacing_order not in ("auto", "xyz", "zyx"):
            raise _UsageError("--spacing-order must be auto, xyz or zyx")
        cases, classes = score_folders(pred, gt, profile=prof.name, tolerance=tolerance, spacing_order=spacing_order)
        summary = aggregate.summary(aggregate.complete(cases))
        typer.echo(f"profile {prof.id}, tolerance {cases['tolerance'].iloc[0]:g}")
        typer.echo(_format_table(summary))
        if out is not None:
            case_rows = cases.assign(level="case", label=np.nan)
            class_rows = classes.assign(level="class") if len(classes) else pd.DataFrame(columns=["level"])
            rows = pd.concat([case_rows, class_rows], ignore_index=True, sort=False)
            cols = ["level", "case", "modality", "label", "dsc", "nsd", "status", "message", "runtime_s",
                    "gt_voxels", "pred_voxels", "skipped", "profile", "tolerance", "dim"]
            rows = rows.reindex(columns=cols).sort_values(["case", "level", "label"], kind="stable", na_position="first")
            for col in ("label", "gt_voxels", "pred_voxels", "dim"):
                rows[col] = rows[col].astype("Int64")
            rows["dim"] = rows.groupby("case")["dim"].transform("max")
            rows["tolerance"] = rows.groupby("case")["tolerance"].transform("max")
            rows.loc[rows["level"] == "class", "status"] = "ok"
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                rows.to_csv(out, index=False)
            except OSError as exc:
                raise _UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
            typer.echo(f"wrote {len(rows)} rows to {out}")
    except (_UsageError, ValueError) as exc:
        _fail(str(exc))


def main() -> None:  # pragma: no cover - python -m evaluator.cli
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
