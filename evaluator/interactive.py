"""Interactive and point-prompt tracks, trusted side: click simulation, iteration inputs, per-iteration
scores and DSC_AUC / NSD_AUC, compatible with the CVPR 2025 reference ``CVPR25_iter_eval.py``
(JunMa11/CVPR-MedSegFMCompetition). The interface is specified in ``docs/interactive.md``.

Everything here is a pure, deterministic function of one case's arrays (numpy and scipy only): the same inputs
give the same clicks, byte for byte, on every run and every host.

Click rule (per class, per iteration)
-------------------------------------
1. error = ``(pred == c) != (gt == c)``; no error -> no click.
2. the largest connected component of the error (full connectivity: 26 in 3D, 8 in 2D; ties -> the component
   whose first voxel comes first in C order, which is how the reference's ``cc3d`` numbers them).
3. the distance of its voxels to the component's border (Euclidean distance transform, the outside of the image
   counting as outside): on the case's spacing under ``default``; on unit spacing under ``cvpr25`` (the
   reference ignores spacing), with the reference's 2x downsampling of components whose padded box exceeds
   60 M voxels.
4. the click is the voxel of maximal distance; ties -> the maxima in C order, ``RandomState(42).choice``
   (the reference seeds the global generator with 42 before each choice: the same number, no global state).
5. ``gt[click] == c`` -> a foreground click (missed structure), else a background click (over-segmentation).
"""

from __future__ import annotations

import math
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict

import numpy as np
import numpy.typing as npt

from .profiles import get_profile
from .scoring import CaseScore, score_case

__all__ = [
    "Click",
    "PROMPT_MODES",
    "DEFAULT_ITERATIONS",
    "CLASS_BUDGET_S",
    "LARGE_ROI_VOXELS",
    "click_classes",
    "place_click",
    "next_clicks",
    "accumulate_clicks",
    "iteration_inputs",
    "prompt_inputs",
    "write_iteration_npz",
    "score_iteration",
    "auc",
    "interactive_summary",
    "manifest_points",
    "interior_point",
    "case_budget_s",
]

#: Refinement iterations after the first prompt (the reference: 5 clicks).
DEFAULT_ITERATIONS = 5
#: Time budget per class over all iterations of a case, seconds (the reference: 90 s per class).
CLASS_BUDGET_S = 90.0
#: The reference downsamples (2x, max) an error component whose padded box holds more voxels than this.
LARGE_ROI_VOXELS = 60_000_000
#: Prompt modes of a track.
PROMPT_MODES: tuple[str, ...] = ("box", "point", "box+point")
_SEED = 42

ClickKind = Literal["fg", "bg"]


class Click(TypedDict):
    """One class's click of one iteration (JSON-ready). ``kind``/``point`` None: the class was perfect."""

    label: int
    kind: ClickKind | None
    point: list[int] | None


def _profile_name(profile: str) -> str:
    return get_profile(profile).name


def _as_array(name: str, a: Any) -> npt.NDArray[Any]:
    arr = np.asarray(a)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must be 2D (H, W) or 3D (D, H, W), got shape {arr.shape}")
    return arr


# --------------------------------------------------------------------------------------------- classes


def click_classes(gt: npt.ArrayLike, *, labels: Sequence[int] | None = None, profile: str = "default") -> list[int]:
    """The classes clicked (and scored), ascending.

    ``cvpr25``: the reference's ``np.sort(pd.unique(gts.ravel()))[1:]`` (the distinct ground-truth values but the
    smallest, i.e. background). Otherwise ``labels`` (the prompted labels ``1..n_boxes``) or, when ``None``, the
    nonzero labels present in the ground truth.
    """
    g = np.asarray(gt)
    if _profile_name(profile) == "cvpr25":
        return [int(v) for v in np.unique(g)[1:]]
    if labels is not None:
        out = sorted({int(c) for c in labels})
        if any(c <= 0 for c in out):
            raise ValueError(f"labels must be positive class values, got {out}")
        return out
    return [int(v) for v in np.unique(g) if v > 0]


# --------------------------------------------------------------------------------------------- one click


def _choose(coords: npt.NDArray[np.intp]) -> tuple[int, ...]:
    """The reference's tie break: ``np.random.seed(42); coords[np.random.choice(len(coords))]``."""
    idx = int(np.random.RandomState(_SEED).choice(len(coords)))
    return tuple(int(v) for v in coords[idx])


def _downsample2(a: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """``skimage.measure.block_reduce(a, (2, 2, 2), np.max)``: zero-padded at the end to even sizes."""
    pad = [(0, n % 2) for n in a.shape]
    b = np.pad(a, pad) if any(p[1] for p in pad) else a
    d, h, w = (n // 2 for n in b.shape)
    return np.asarray(b.reshape(d, 2, h, 2, w, 2).max(axis=(1, 3, 5)), dtype=np.uint8)


def _component_distance(comp: npt.NDArray[np.bool_], sampling: tuple[float, ...] | None) -> npt.NDArray[np.float64]:
    """Distance of each voxel of ``comp`` (cropped to its bounding box) to the nearest voxel outside it, the
    outside of the crop counting as outside; as the reference's ``compute_edt``: the crop padded by 25 % of its
    size (at least 1) with zeros, then the EDT."""
    from scipy import ndimage  # here, not at import: scipy.ndimage costs ~0.15 s of start-up to whoever imports this

    crop = np.asarray(comp.shape)
    padding = np.maximum((crop * 0.25).astype(int), 1)
    padded = np.zeros(tuple(int(v) for v in crop + 2 * padding), dtype=np.uint8)
    inner = tuple(slice(int(p), int(p) + int(n)) for p, n in zip(padding, crop, strict=True))
    padded[inner] = comp
    large = comp.ndim == 3 and padded.size > LARGE_ROI_VOXELS
    if large:
        small = _downsample2(padded)
        edt = np.asarray(ndimage.distance_transform_edt(small, sampling=sampling), dtype=np.float64)
        edt = edt.repeat(2, axis=0).repeat(2, axis=1).repeat(2, axis=2)
    else:
        edt = np.asarray(ndimage.distance_transform_edt(padded, sampling=sampling), dtype=np.float64)
    out: npt.NDArray[np.float64] = edt[inner] * comp
    return out


def _bbox(mask: npt.NDArray[np.bool_]) -> tuple[slice, ...] | None:
    if not mask.any():
        return None
    sl: list[slice] = []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        w = np.flatnonzero(mask.any(axis=other))
        sl.append(slice(int(w[0]), int(w[-1]) + 1))
    return tuple(sl)


def _farthest_point(mask: npt.NDArray[np.bool_], sampling: tuple[float, ...] | None) -> tuple[int, ...]:
    """The voxel of non-empty ``mask`` farthest from its border (steps 3-4 of the click rule), full-array indices."""
    box = _bbox(mask)
    assert box is not None
    comp = mask[box]
    dist = _component_distance(comp, sampling)
    if float(dist.max()) > 0:
        coords = np.argwhere(dist == dist.max())
    else:  # the reference: "error is extremely small" (only after downsampling) -> any voxel of the component
        coords = np.argwhere(comp)
    local = _choose(coords)
    return tuple(int(v) + int(s.start) for v, s in zip(local, box, strict=True))


def _largest_component(err: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_] | None:
    from scipy import ndimage

    box = _bbox(err)
    if box is None:
        return None
    crop = err[box]
    lab, n = ndimage.label(crop, structure=np.ones((3,) * crop.ndim, dtype=bool))
    sizes = np.bincount(np.asarray(lab).ravel())
    sizes[0] = 0
    k = int(np.argmax(sizes))  # first maximum: the lowest label, i.e. first voxel first in C order
    full = np.zeros(err.shape, dtype=bool)
    full[box] = lab == k
    return full


def place_click(
    gt_mask: npt.ArrayLike,
    pred_mask: npt.ArrayLike,
    *,
    spacing: Sequence[float] | None = None,
    profile: str = "default",
) -> tuple[ClickKind, tuple[int, ...]] | None:
    """The click one class gets: ``(kind, point)`` with ``point`` in array-index order, or ``None`` when the
    prediction of the class is perfect. ``spacing`` (array-axis order) weights the distance under ``default``;
    ``cvpr25`` uses unit spacing as the reference."""
    g = np.asarray(gt_mask, dtype=bool)
    p = np.asarray(pred_mask, dtype=bool)
    if g.shape != p.shape:
        raise ValueError(f"ground truth and prediction masks differ in shape: {g.shape} vs {p.shape}")
    if g.ndim not in (2, 3):
        raise ValueError(f"masks must be 2D or 3D, got shape {g.shape}")
    comp = _largest_component(g != p)
    if comp is None:
        return None
    sampling: tuple[float, ...] | None = None
    if _profile_name(profile) != "cvpr25" and spacing is not None:
        sampling = _check_spacing(spacing, g.ndim)
    point = _farthest_point(comp, sampling)
    kind: ClickKind = "fg" if g[point] else "bg"
    return kind, point


def _check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    s = np.asarray(spacing, dtype=np.float64).ravel()
    if s.size != ndim or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"spacing must be {ndim} positive finite values in array-axis order, got {list(s)}")
    return tuple(float(v) for v in s)


def next_clicks(
    gt: npt.ArrayLike,
    pred: npt.ArrayLike,
    *,
    spacing: Sequence[float] | None = None,
    labels: Sequence[int] | None = None,
    profile: str = "default",
) -> list[Click]:
    """The clicks one prediction produces: one entry per class of :func:`click_classes`, in that order.

    ``kind``/``point`` None: the class is perfect, no click. ``cvpr25`` clicks on ``pred.astype(np.uint8)`` as the
    reference (which scores the prediction as written).
    """
    g = _as_array("gt", gt)
    p = _as_array("pred", pred)
    if g.shape != p.shape:
        raise ValueError(f"gt and pred must have the same shape, got {g.shape} and {p.shape}")
    name = _profile_name(profile)
    if name == "cvpr25":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # NaN/inf cast, as the reference
            p = p.astype(np.uint8)
        g = g.astype(np.uint8) if g.dtype.kind == "b" else g
    out: list[Click] = []
    for c in click_classes(g, labels=labels, profile=profile):
        got = place_click(g == c, p == c, spacing=spacing, profile=profile)
        if got is None:
            out.append({"label": c, "kind": None, "point": None})
        else:
            out.append({"label": c, "kind": got[0], "point": list(got[1])})
    return out


def accumulate_clicks(
    per_iteration: Sequence[Sequence[Mapping[str, Any]]],
    *,
    initial: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Every click so far in the reference's layout (JSON-ready)::

        {"labels": [c1, c2, ...],
         "clicks": [{"fg": [[...], ...], "bg": [[...], ...]}, ...],   # one dict per class
         "clicks_order": [["fg", None, "bg", ...], ...]}             # one list per class

    ``per_iteration[i]`` = :func:`next_clicks` of iteration i's kept prediction; ``initial`` = the point prompts
    (:func:`manifest_points`), the first ``fg`` click of each class. Classes are those of the first list given.
    """
    lists = ([list(initial)] if initial else []) + [list(x) for x in per_iteration]
    labels: list[int] = []
    for lst in lists:
        if lst:
            labels = [int(c["label"]) for c in lst]
            break
    pos = {c: j for j, c in enumerate(labels)}
    clicks: list[dict[str, list[list[int]]]] = [{"fg": [], "bg": []} for _ in labels]
    order: list[list[str | None]] = [[] for _ in labels]
    for lst in lists:
        for c in lst:
            j = pos.get(int(c["label"]))
            if j is None:
                raise ValueError(f"click for label {c['label']} but the classes are {labels}")
            kind = c.get("kind")
            if kind is None:
                order[j].append(None)
                continue
            if kind not in ("fg", "bg") or c.get("point") is None:
                raise ValueError(f"invalid click {dict(c)!r}: kind must be 'fg' or 'bg' with a point")
            clicks[j][str(kind)].append([int(v) for v in c["point"]])
            order[j].append(str(kind))
    return {"labels": labels, "clicks": clicks, "clicks_order": order}


# --------------------------------------------------------------------------------------------- inputs


def _ref_clicks(clicks: Mapping[str, Any]) -> tuple[list[dict[str, list[list[int]]]], list[list[str | None]]]:
    """The reference's Python objects (click coordinates as plain ints: see :func:`write_iteration_npz`)."""
    cl = [{"fg": [[int(v) for v in pt] for pt in d["fg"]], "bg": [[int(v) for v in pt] for pt in d["bg"]]}
          for d in clicks["clicks"]]
    order = [list(o) for o in clicks["clicks_order"]]
    return cl, order


def _points_array(points: Sequence[Mapping[str, Any]], ndim: int) -> npt.NDArray[np.int64]:
    if not points:
        return np.zeros((0, ndim), dtype=np.int64)
    return np.asarray([[int(v) for v in p["point"]] for p in points], dtype=np.int64).reshape(len(points), ndim)


def _spatial_ndim(case_input: Mapping[str, Any]) -> int:
    imgs = np.asarray(case_input["imgs"])
    if imgs.ndim == 3 and imgs.shape[-1] in (1, 3) and "spacing" not in case_input:
        return 2
    return 3 if imgs.ndim == 3 else 2


def prompt_inputs(case_input: Mapping[str, Any], *, prompt: str = "box",
                  points: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The input npz arrays of a single-run track (and of iteration 0) under prompt mode ``prompt``:
    ``box`` = the input as stored; ``point`` = ``imgs``, ``spacing`` (if any), ``clicks`` (one ``fg`` click per
    class, the point), ``clicks_order`` (``[["fg"], ...]``), ``points``, no ``boxes``; ``box+point`` = both."""
    if prompt not in PROMPT_MODES:
        raise ValueError(f"prompt must be one of {', '.join(PROMPT_MODES)}, got {prompt!r}")
    if prompt == "box":
        return dict(case_input)
    if not points:
        raise ValueError(f"prompt {prompt!r} needs the case's points (manifest_points(case)); none were given")
    out: dict[str, Any] = {"imgs": case_input["imgs"]}
    if "spacing" in case_input:
        out["spacing"] = case_input["spacing"]
    cl, order = _ref_clicks(accumulate_clicks([], initial=points))
    out["clicks"] = cl
    out["clicks_order"] = order
    out["points"] = _points_array(points, _spatial_ndim(case_input))
    if prompt == "box+point":
        if "boxes" not in case_input:
            raise ValueError("prompt 'box+point' needs the case input's 'boxes'")
        out["boxes"] = case_input["boxes"]
    return out


def iteration_inputs(
    case_input: Mapping[str, Any],
    *,
    iteration: int,
    prompt: str = "box",
    clicks: Mapping[str, Any] | None = None,
    prev_pred: npt.ArrayLike | None = None,
    points: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The arrays of iteration ``iteration``'s input npz (docs/interactive.md, the table).

    Iteration 0: :func:`prompt_inputs`. Iterations >= 1: ``imgs``, ``spacing`` (if the input has it), ``clicks``,
    ``clicks_order``, ``prev_pred`` (uint8; zeros when ``None``), ``boxes`` under ``box`` / ``box+point``,
    ``points`` under ``point`` / ``box+point``; ``clicks`` = :func:`accumulate_clicks` of every click so far
    (point prompts included).
    """
    if iteration < 0:
        raise ValueError(f"iteration must be >= 0, got {iteration}")
    if iteration == 0:
        return prompt_inputs(case_input, prompt=prompt, points=points)
    if prompt not in PROMPT_MODES:
        raise ValueError(f"prompt must be one of {', '.join(PROMPT_MODES)}, got {prompt!r}")
    if clicks is None:
        raise ValueError(f"iteration {iteration} needs the clicks so far (accumulate_clicks(...))")
    imgs = np.asarray(case_input["imgs"])
    ndim = _spatial_ndim(case_input)
    shape = imgs.shape[:ndim]
    if prev_pred is None:
        prev = np.zeros(shape, dtype=np.uint8)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            prev = np.asarray(prev_pred).astype(np.uint8)
        if prev.shape != shape:
            raise ValueError(f"prev_pred has shape {prev.shape}, the case's spatial shape is {shape}")
    out: dict[str, Any] = {"imgs": case_input["imgs"]}
    if "spacing" in case_input:
        out["spacing"] = case_input["spacing"]
    cl, order = _ref_clicks(clicks)
    out["clicks"] = cl
    out["clicks_order"] = order
    out["prev_pred"] = prev
    if prompt in ("box", "box+point") and "boxes" in case_input:
        out["boxes"] = case_input["boxes"]
    if prompt in ("point", "box+point") and points:
        out["points"] = _points_array(points, ndim)
    return out


def write_iteration_npz(path: str | os.PathLike[str], arrays: Mapping[str, Any]) -> None:
    """Write an iteration's input npz — THE writer of iteration inputs (the execution host's
    ``worker.interactive.prompted_input`` and ``segarena check`` use it). ``np.load`` gives what the reference's
    ``np.savez_compressed(path, **arrays)`` gives (lists become arrays as numpy converts them; the list of click
    dicts a pickled object array), with two differences a model cannot see:

    * object arrays are pickled as ``numpy.array(<plain Python list>, "O")`` and hold plain ints, so a container
      with numpy 1.x reads them (numpy 2's own pickles name ``numpy._core``, which numpy < 1.26 lacks: the Debian
      base image's numpy 1.24 failed on them); readers still need ``allow_pickle=True``, as with the reference;
    * the zip members are stored, not deflated: the input is rewritten at every iteration on the execution host's
      local disk, and deflating the image each time cost more than the container's start."""
    p = Path(path)
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in arrays.items():
            arr = _as_saved(value)
            with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                if arr.dtype.hasobject:
                    header = {"descr": "|O", "fortran_order": False, "shape": arr.shape}
                    np.lib.format.write_array_header_1_0(f, header)
                    _PortablePickler(f, protocol=3).dump(arr)
                else:
                    np.lib.format.write_array(f, arr, allow_pickle=False)


class _PortablePickler(pickle.Pickler):
    """Pickles ndarrays as ``numpy.array(list, dtype)`` and numpy scalars as Python numbers: no module path that
    differs between numpy 1.x and 2.x."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            return np.array, (obj.tolist(), obj.dtype.str if not obj.dtype.hasobject else "O")
        if isinstance(obj, np.generic):
            return type(obj.item()), (obj.item(),)
        return NotImplemented


def _as_saved(v: Any) -> npt.NDArray[Any]:
    if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
        arr = np.empty(len(v), dtype=object)  # what np.array(list of dicts) gives, without numpy guessing
        for i, x in enumerate(v):
            arr[i] = x
        return arr
    return np.asanyarray(v)


# --------------------------------------------------------------------------------------------- scores


def score_iteration(
    gt: npt.ArrayLike,
    pred: npt.ArrayLike,
    *,
    spacing: Sequence[float],
    labels: Sequence[int] | None = None,
    profile: str = "default",
    stored_spacing: Sequence[float] | None = None,
) -> CaseScore:
    """DSC and NSD of one iteration's prediction under ``profile`` (:func:`evaluator.score_case`).

    ``cvpr25``: the reference's ``compute_multi_class_dsc`` / ``compute_multi_class_nsd`` (classes = distinct
    ground-truth values but the smallest; NSD only if the case DSC > 0.2, else 0; spacing as stored; unrounded).
    """
    return score_case(gt, pred, spacing=spacing, profile=profile, labels=labels, stored_spacing=stored_spacing)


def auc(values: Sequence[float | None], *, profile: str = "default") -> float:
    """DSC_AUC / NSD_AUC from the values of iterations 0..K (length K + 1).

    The reference: ``scipy.integrate.cumulative_trapezoid(values[-K:], np.arange(K))[-1]`` — the trapezoid over
    the K click iterations with unit steps (the first-prompt iteration is not part of it), computed here with
    the same float operations (``np.cumsum(np.diff(x) * (y[1:] + y[:-1]) / 2.0)``). Same definition in every
    profile. NaN if K < 2 or a value is NaN/None.
    """
    get_profile(profile)
    y_all = np.asarray([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    k = y_all.size - 1
    if k < 2:
        return math.nan
    y = y_all[-k:]
    d = np.diff(np.arange(k))
    return float(np.cumsum(d * (y[1:] + y[:-1]) / 2.0)[-1])


def interactive_summary(dscs: Sequence[float | None], nsds: Sequence[float | None], *,
                        profile: str = "default") -> dict[str, Any]:
    """``{"dsc_auc", "nsd_auc", "final_dsc", "final_nsd", "dsc": [...], "nsd": [...]}``, final = iteration K."""
    if len(dscs) != len(nsds) or not dscs:
        raise ValueError(f"need the same non-zero number of DSC and NSD values, got {len(dscs)} and {len(nsds)}")

    def f(v: float | None) -> float:
        return math.nan if v is None else float(v)

    return {
        "dsc_auc": auc(dscs, profile=profile),
        "nsd_auc": auc(nsds, profile=profile),
        "final_dsc": f(dscs[-1]),
        "final_nsd": f(nsds[-1]),
        "dsc": [f(v) for v in dscs],
        "nsd": [f(v) for v in nsds],
    }


def case_budget_s(n_classes: int, class_budget_s: float = CLASS_BUDGET_S) -> float:
    """A case's time budget over all its iterations: ``class_budget_s`` per class (the reference's
    ``runtime_upperbound = num_classes * 90``), at least one class."""
    return float(class_budget_s) * max(1, int(n_classes))


# --------------------------------------------------------------------------------------------- point prompts


def interior_point(mask: npt.ArrayLike, spacing: Sequence[float] | None = None) -> list[int]:
    """The voxel of a non-empty structure farthest from its border (EDT on ``spacing``, array-axis order; the
    outside of the image counts as outside; ties as clicks), array-index order. The rule the synthetic generator
    and the importer use for the manifest's point prompts (``data_manifests.points.interior_point``)."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim not in (2, 3):
        raise ValueError(f"mask must be 2D or 3D, got shape {m.shape}")
    if not m.any():
        raise ValueError("the structure is empty: it has no interior point")
    sampling = None if spacing is None else _check_spacing(spacing, m.ndim)
    return list(_farthest_point(m, sampling))


def manifest_points(case: Any) -> list[Click]:
    """The point prompts stored in the test-set manifest for ``case`` (a ``CaseEntry`` or its dict): one ``fg``
    click per label, label order. ``ValueError`` naming the fix when a label has no point."""
    labels = case["labels"] if isinstance(case, Mapping) else case.labels
    cid = case["id"] if isinstance(case, Mapping) else getattr(case, "id", "?")
    out: list[Click] = []
    for lab in labels:
        value = lab["value"] if isinstance(lab, Mapping) else lab.value
        point = lab.get("point") if isinstance(lab, Mapping) else getattr(lab, "point", None)
        if point is None:
            raise ValueError(f"case {cid}: label {value} has no point prompt in the manifest; upgrade the manifest "
                             "(segarena testset migrate, or load it with data_manifests.load_manifest)")
        out.append({"label": int(value), "kind": "fg", "point": [int(v) for v in point]})
    return out
