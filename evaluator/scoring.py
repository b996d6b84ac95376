"""Case scoring: per-class DSC and NSD of two label maps under a metric profile."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ._refsurface import reference_surface_dice
from ._surface import surface_overlap
from .metrics import check_spacing
from .profiles import REFERENCE_VALUE_PROFILES, Profile, get_profile

__all__ = ["ClassScore", "CaseScore", "score_case", "label_stats", "LabelStats", "reference_values"]

_CHUNK = 1 << 22  # voxels per slab of the single streaming pass


@dataclass(frozen=True)
class ClassScore:
    """Scores of one class. NaN means the class was skipped (absent from both masks)."""

    dsc: float
    nsd: float
    gt_voxels: int = 0
    pred_voxels: int = 0

    @property
    def skipped(self) -> bool:
        return math.isnan(self.dsc)


@dataclass(frozen=True)
class CaseScore:
    """Scores of one case under one profile.

    ``dsc`` / ``nsd`` are the case means over ``per_class`` (NaN-excluding for ``default``,
    NaN-propagating and rounded to 4 decimals for ``cvpr24``, as the reference did).
    """

    per_class: dict[int, ClassScore]
    dsc: float
    nsd: float
    profile: str
    tolerance: float = 2.0
    notes: tuple[str, ...] = field(default=())

    @property
    def undefined(self) -> bool:
        """The case DSC is undefined (NaN): under ``cvpr24`` a label of ``1..gt.max()`` absent from both masks
        (the reference's empty CSV field), under ``default`` / ``cvpr25`` no class to score. Shown as undefined,
        never as 0; ranking rule in ``docs/interactive.md`` ("Undefined cases")."""
        return math.isnan(self.dsc)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; NaN (skipped / undefined) becomes ``None``."""

        def num(v: float | None) -> float | None:
            return None if v is None or math.isnan(v) else float(v)

        return {
            "profile": self.profile,
            "tolerance": self.tolerance,
            "dsc": num(self.dsc),
            "nsd": num(self.nsd),
            "undefined": self.undefined,
            "per_class": {
                str(k): {"dsc": num(c.dsc), "nsd": num(c.nsd), "gt_voxels": c.gt_voxels, "pred_voxels": c.pred_voxels}
                for k, c in self.per_class.items()
            },
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class LabelStats:
    """Voxel counts and inclusive bounding boxes per class, from one pass over both maps."""

    classes: tuple[int, ...]
    confusion: np.ndarray  # (k+1, k+1) voxel counts, [gt index, pred index]; index 0 = any other value
    gt_count: dict[int, int]
    pred_count: dict[int, int]
    intersection: dict[int, int]
    gt_box: dict[int, tuple[tuple[int, ...], tuple[int, ...]]]
    pred_box: dict[int, tuple[tuple[int, ...], tuple[int, ...]]]


def _check_labels(name: str, labels: npt.ArrayLike) -> npt.NDArray[Any]:
    a = np.asarray(labels)
    if not (a.dtype == bool or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be an integer label map, got dtype {a.dtype}")
    if a.ndim not in (2, 3):
        raise ValueError(f"{name} must be 2D or 3D, got shape {a.shape}")
    return a


def reference_values(pred_labels: npt.ArrayLike) -> npt.NDArray[Any]:
    """A prediction as the reference scripts scored it (``seg == i`` per class): integers kept, any value that no
    class can equal (negative, non-integer, NaN, infinite, beyond int32) mapped to -1, which matches no class.
    Used by the profiles of :data:`REFERENCE_VALUE_PROFILES` instead of refusing float or negative labels."""
    a = np.asarray(pred_labels)
    if a.ndim not in (2, 3):
        raise ValueError(f"pred_labels must be 2D or 3D, got shape {a.shape}")
    if a.dtype == bool or np.issubdtype(a.dtype, np.integer):
        if a.dtype.kind == "i" and a.size and int(a.min()) < 0:
            return np.where(a < 0, -1, a).astype(np.int64)
        return a
    if not (np.issubdtype(a.dtype, np.floating) or a.dtype.kind == "c"):
        raise ValueError(f"pred_labels must be numeric, got dtype {a.dtype}")
    if a.dtype.kind == "c":
        a = np.where(a.imag == 0, a.real, np.nan)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(a) & (a == np.floor(a)) & (a >= 0) & (a < 2**31)
    out: npt.NDArray[np.int64] = np.where(ok, np.where(ok, a, 0).astype(np.int64), -1)
    return out


def _nonzero_positions(f: np.ndarray) -> np.ndarray:
    """Indices of the nonzero elements of a 1D contiguous array (word-wise scan first)."""
    per_word = 8 // f.itemsize if f.itemsize in (1, 2, 4, 8) else 0
    if per_word == 0 or f.size % per_word:
        return np.flatnonzero(f)
    words = f.view(np.uint64)
    nzw = np.flatnonzero(words)
    if per_word == 1:
        return nzw
    cand = (nzw[:, None] * per_word + np.arange(per_word)).ravel()
    found: npt.NDArray[np.intp] = cand[f[cand] != 0]
    return found


def label_stats(gt: np.ndarray, pred: np.ndarray, classes: Sequence[int]) -> LabelStats:
    """Counts, intersections and bounding boxes of ``classes`` in one streaming pass.

    The volume is read once, slab by slab; only the voxels that are nonzero in either
    map are looked at further, so the cost does not grow with the number of classes.
    """
    classes = tuple(sorted({int(c) for c in classes}))
    shape = gt.shape
    nd = gt.ndim
    k = len(classes) + 1  # compact index 0 = background / not a requested class
    cls_arr = np.asarray(classes, dtype=np.int64)
    max_c = int(cls_arr.max()) if classes else 0
    lut = None
    if classes and max_c < (1 << 16):
        lut = np.zeros(max_c + 1, np.int64)
        lut[cls_arr] = np.arange(1, k)

    def compact(v: np.ndarray) -> np.ndarray:
        v = v.astype(np.int64, copy=False)
        if not classes:
            return np.zeros(v.shape, np.int64)
        if lut is not None:
            ok = (v >= 0) & (v <= max_c)
            return np.where(ok, lut[np.where(ok, v, 0)], 0)
        i = np.clip(np.searchsorted(cls_arr, v), 0, len(classes) - 1)
        return np.where(cls_arr[i] == v, i + 1, 0)

    conf = np.zeros(k * k, np.int64)
    pres_g = [np.zeros((k, n), bool) for n in shape]
    pres_p = [np.zeros((k, n), bool) for n in shape]
    plane = int(np.prod(shape[1:]))
    step = max(1, _CHUNK // max(plane, 1))
    for z0 in range(0, shape[0], step):
        z1 = min(shape[0], z0 + step)
        gs = np.ascontiguousarray(gt[z0:z1]).reshape(-1)
        ps = np.ascontiguousarray(pred[z0:z1]).reshape(-1)
        if gs.dtype == bool:
            gs = gs.view(np.uint8)
        if ps.dtype == bool:
            ps = ps.view(np.uint8)
        idx = _nonzero_positions(gs | ps)
        if idx.size == 0:
            continue
        cg = compact(gs[idx])
        cp = compact(ps[idx])
        coords = []
        rem = idx
        for ax in range(nd - 1, 0, -1):
            rem, c = np.divmod(rem, shape[ax])
            coords.append(c)
        coords.append(rem + z0)
        coords.reverse()
        conf += np.bincount(cg * k + cp, minlength=k * k)
        for ax, n in enumerate(shape):
            pres_g[ax] |= np.bincount(cg * n + coords[ax], minlength=k * n).reshape(k, n) > 0
            pres_p[ax] |= np.bincount(cp * n + coords[ax], minlength=k * n).reshape(k, n) > 0

    conf2 = conf.reshape(k, k)
    conf2[0, 0] = 0  # background-background voxels are never visited
    cnt_g, cnt_p, inter = conf2.sum(axis=1), conf2.sum(axis=0), np.diagonal(conf2)

    def boxes(pres: list[npt.NDArray[np.bool_]], cnt: npt.NDArray[np.int64]
              ) -> dict[int, tuple[tuple[int, ...], tuple[int, ...]]]:
        out: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        for j, c in enumerate(classes, start=1):
            if cnt[j] == 0:
                continue
            lo, hi = [], []
            for ax in range(nd):
                w = np.flatnonzero(pres[ax][j])
                lo.append(int(w[0]))
                hi.append(int(w[-1]))
            out[c] = (tuple(lo), tuple(hi))
        return out

    return LabelStats(
        classes=classes,
        confusion=conf2,
        gt_count={c: int(cnt_g[j]) for j, c in enumerate(classes, start=1)},
        pred_count={c: int(cnt_p[j]) for j, c in enumerate(classes, start=1)},
        intersection={c: int(inter[j]) for j, c in enumerate(classes, start=1)},
        gt_box=boxes(pres_g, cnt_g),
        pred_box=boxes(pres_p, cnt_p),
    )


def _class_nsd(gt: npt.NDArray[Any], pred: npt.NDArray[Any], label: int, stats: LabelStats,
               spacing: tuple[float, ...], tol: float, expand_2d: bool, reference: bool = False) -> float:
    boxes = [b for b in (stats.gt_box.get(label), stats.pred_box.get(label)) if b is not None]
    lo = [min(b[0][a] for b in boxes) for a in range(gt.ndim)]
    hi = [max(b[1][a] for b in boxes) for a in range(gt.ndim)]
    crop = tuple(slice(a, b + 1) for a, b in zip(lo, hi))
    g = gt[crop] == label
    p = pred[crop] == label
    if expand_2d:
        g, p = g[..., None], p[..., None]
    if reference:  # the reference's float operations, to the last bit (cvpr25 is compared unrounded)
        return reference_surface_dice(g, p, spacing, tol)
    return surface_overlap(g, p, spacing, tol).nsd


def _mean_skipping_nan(values: Iterable[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(sum(vals) / len(vals)) if vals else math.nan


def score_case(
    gt_labels: npt.ArrayLike,
    pred_labels: npt.ArrayLike,
    *,
    spacing: Sequence[float],
    profile: str | Profile = "default",
    labels: Iterable[int] | None = None,
    tolerance: float | None = None,
    stored_spacing: Sequence[float] | None = None,
) -> CaseScore:
    """Score one case: per-class DSC and NSD and their case means.

    Parameters
    ----------
    gt_labels, pred_labels : array_like of int, 2D ``(H, W)`` or 3D ``(D, H, W)``, equal shape
    spacing : sequence of float
        Voxel size in **array-axis order** (what :func:`evaluator.io.load_ground_truth`
        returns). 2D challenge cases use ``(1, 1)``.
    profile : str
        ``"default"``, ``"cvpr24"`` or ``"cvpr25"`` (optionally ``name@version``), see :data:`PROFILES`.
        ``cvpr24`` / ``cvpr25`` score a float or negative-valued prediction as their reference did
        (:func:`reference_values`); ``default`` refuses it.
    labels : iterable of int, optional
        ``default`` profile: the classes to score, i.e. the prompted labels ``1..n_boxes``.
        ``None`` scores the nonzero labels present in the ground truth. Ignored by
        ``cvpr24``, whose classes are ``1..gt.max()`` by definition, and by ``cvpr25``
        (the distinct ground-truth values without the smallest).
    tolerance : float, optional
        NSD tolerance; the profile's (2.0) when omitted.
    stored_spacing : sequence of float, optional
        ``cvpr24`` / ``cvpr25`` only: the spacing exactly as stored in the ground-truth file, which the
        reference passed unchanged. Defaults to ``spacing.stored`` when ``spacing`` comes from
        :func:`evaluator.io.load_ground_truth`, else ``spacing``.

    Empty masks (``default``): both empty -> skipped (NaN, excluded from the means); gt
    non-empty and pred empty, or gt empty and pred non-empty for a requested class ->
    DSC 0 and NSD 0. A case whose classes are all skipped has NaN means.
    """
    prof = get_profile(profile)
    gt = _check_labels("gt_labels", gt_labels)
    if prof.name in REFERENCE_VALUE_PROFILES:
        pred = reference_values(pred_labels)
    else:
        pred = _check_labels("pred_labels", pred_labels)
    if gt.shape != pred.shape:
        raise ValueError(f"gt_labels and pred_labels must have the same shape, got {gt.shape} and {pred.shape}")
    tol = prof.tolerance if tolerance is None else float(tolerance)
    if not math.isfinite(tol) or tol < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    spacing_t = check_spacing(spacing, gt.ndim)
    if prof.name == "cvpr24":
        gmax = int(gt.max()) if gt.size else 0
        return _score_reference(gt, pred, prof, tol, spacing, stored_spacing, list(range(1, gmax + 1)), True)
    if prof.name == "cvpr25":
        # the reference: np.sort(pd.unique(gt.ravel()))[1:] -- every distinct value but the smallest (background)
        classes = [int(v) for v in np.unique(gt)[1:]]
        return _score_reference(gt, pred, prof, tol, spacing, stored_spacing, classes, False)
    return _score_default(gt, pred, prof, tol, spacing_t, labels)


def _score_default(gt: npt.NDArray[Any], pred: npt.NDArray[Any], prof: Profile, tol: float,
                   spacing: tuple[float, ...], labels: Iterable[int] | None) -> CaseScore:
    notes = []
    candidates: Iterable[int]
    if labels is None:
        gmax = int(gt.max()) if gt.size else 0
        if gmax < (1 << 16):
            candidates = range(1, gmax + 1)
        else:
            candidates = [int(v) for v in np.unique(gt) if v > 0]
        stats = label_stats(gt, pred, candidates)
        classes = [c for c in stats.classes if stats.gt_count[c] > 0]
        notes.append("classes: nonzero labels present in the ground truth")
    else:
        classes = sorted({int(c) for c in labels})
        if any(c <= 0 for c in classes):
            raise ValueError(f"labels must be positive class values, got {classes}")
        stats = label_stats(gt, pred, classes)
    per = {}
    for c in classes:
        ng, np_, ni = stats.gt_count[c], stats.pred_count[c], stats.intersection[c]
        if ng == 0 and np_ == 0:
            per[c] = ClassScore(math.nan, math.nan, 0, 0)
        elif ng == 0 or np_ == 0:
            per[c] = ClassScore(0.0, 0.0, ng, np_)
        else:
            d = 2 * ni / (ng + np_)
            n = _class_nsd(gt, pred, c, stats, spacing, tol, expand_2d=False)
            per[c] = ClassScore(d, n, ng, np_)
    return CaseScore(
        per_class=per,
        dsc=_mean_skipping_nan(s.dsc for s in per.values()),
        nsd=_mean_skipping_nan(s.nsd for s in per.values()),
        profile=prof.id,
        tolerance=tol,
        notes=tuple(notes),
    )


def _score_reference(gt: npt.NDArray[Any], pred: npt.NDArray[Any], prof: Profile, tol: float,
                     spacing: Sequence[float], stored_spacing: Sequence[float] | None, classes: list[int],
                     round4: bool) -> CaseScore:
    """The 2024 (``round4``) and 2025 reference scripts: ``compute_multi_class_dsc`` / ``_nsd`` over ``classes``."""
    stats = label_stats(gt, pred, classes)
    dscs = []
    for c in classes:
        ng, np_, ni = stats.gt_count[c], stats.pred_count[c], stats.intersection[c]
        dscs.append(math.nan if ng + np_ == 0 else 2 * ni / (ng + np_))
    # np.mean as the reference: NaN propagates; an empty class list gives NaN.
    case_dsc = float(np.mean(np.asarray(dscs, dtype=np.float64))) if dscs else math.nan
    undefined = [c for c, d in zip(classes, dscs) if math.isnan(d)]
    nsd_spacing: tuple[float, ...]
    if gt.ndim == 2:
        nsd_spacing = (1.0, 1.0, 1.0)
    else:
        raw = stored_spacing if stored_spacing is not None else getattr(spacing, "stored", spacing)
        nsd_spacing = check_spacing(raw, 3)
    nsds = []
    if case_dsc > 0.2:  # False for NaN, as in the reference
        for c in classes:
            ng, np_ = stats.gt_count[c], stats.pred_count[c]
            if ng == 0 or np_ == 0:
                nsds.append(0.0)
            else:
                nsds.append(_class_nsd(gt, pred, c, stats, nsd_spacing, tol, expand_2d=gt.ndim == 2,
                                       reference=not round4))
        case_nsd = float(np.mean(np.asarray(nsds, dtype=np.float64)))
    else:
        nsds = [0.0] * len(classes)
        case_nsd = 0.0
    per = {
        c: ClassScore(d, n, stats.gt_count[c], stats.pred_count[c]) for c, d, n in zip(classes, dscs, nsds)
    }
    notes: tuple[str, ...] = (
        ("per-class values unrounded; case values rounded to 4 decimals as the reference",) if round4 else ()
    )
    if undefined:
        notes += (f"DSC undefined (NaN): label(s) {undefined} absent from both the ground truth and the prediction, "
                  "as the reference",)
    if not classes:
        notes += ("DSC undefined (NaN): no class to score, as the reference",)
    return CaseScore(
        per_class=per,
        dsc=float(np.round(case_dsc, 4)) if round4 else case_dsc,
        nsd=float(np.round(case_nsd, 4)) if round4 else case_nsd,
        profile=prof.id,
        tolerance=tol,
        notes=notes,
    )
