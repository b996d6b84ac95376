"""Safe loading of challenge cases (``.npz``) and NIfTI label maps.

Nothing here executes code from a file: ``.npz`` members are parsed with NumPy's format
reader, object (pickled) arrays are refused, and every size is checked against a limit
from the zip and ``.npy`` headers *before* anything is decompressed. Every problem a
participant (or an organizer) can cause raises :class:`CaseFormatError` with a message
that names the file and says what to do.

Spacing convention: everything returned here is in **array-axis order** (``(sz, sy, sx)``
for a ``(D, H, W)`` array). The 2024 challenge files stored ``spacing`` as ``(x, y, z)``,
SegArena's own files store array order; ``spacing_order="auto"`` tells them apart with the
same rule as ``data_manifests.importer.to_array_order``: ``(a, a, b)`` is read as
``(x, y, z)`` and reversed, ``(b, a, a)`` and isotropic are kept, anything else is read as
``(x, y, z)``. The value as stored stays available as ``spacing.stored`` (the ``cvpr24``
profile uses it, as the reference did).
"""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "CaseFormatError",
    "CaseInput",
    "Spacing",
    "DEFAULT_MAX_BYTES",
    "load_npz",
    "load_case_input",
    "load_ground_truth",
    "load_prediction",
    "load_label_map",
    "parse_case_name",
    "spacing_to_array_order",
    "bound_text",
    "REASON_MAX_CHARS",
]

DEFAULT_MAX_BYTES = 2 * 1024**3  # decompressed bytes per file unless told otherwise

_NAME_RE = re.compile(r"^(?P<dim>[23])DBox_(?P<mod>[^_]+)_(?P<id>.+?)(?:\.npz|\.nii\.gz|\.nii)?$")


#: Default bound of a stored failure reason (the worker passes ``settings.reason_max_chars``).
REASON_MAX_CHARS = 2000
#: Bound of one untrusted fragment (a key list, a dtype, an exception text) quoted inside a message.
_FRAGMENT_CHARS = 200


def bound_text(text: object, limit: int = REASON_MAX_CHARS) -> str:
    """``text`` cut to ``limit`` characters with a note of how much was cut: the one bound applied to
    every failure reason and participant-derived text SegArena stores or serves."""
    text = "" if text is None else str(text)
    limit = max(0, int(limit))
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} chars cut)"


def _show(value: object) -> str:
    """An untrusted fragment quoted in a message (bounded)."""
    return bound_text(value, _FRAGMENT_CHARS)


class CaseFormatError(ValueError):
    """A case file is unreadable or not in the expected format; the message says how to fix it."""


class Spacing(tuple[float, ...]):
    """Spacing in array-axis order (a tuple of floats) that remembers the value as stored."""

    stored: tuple[float, ...]
    note: str

    def __new__(cls, values: Iterable[Any], stored: Iterable[Any] | None = None, note: str = "") -> Spacing:
        values = list(values)
        obj = super().__new__(cls, (float(v) for v in values))
        obj.stored = tuple(float(v) for v in (values if stored is None else stored))
        obj.note = note
        return obj

    def __reduce__(self) -> tuple[type[Spacing], tuple[tuple[float, ...], tuple[float, ...], str]]:
        return (Spacing, (tuple(self), self.stored, self.note))


@dataclass(frozen=True)
class CaseInput:
    """One input case as a container sees it."""

    imgs: np.ndarray
    boxes: np.ndarray
    spacing: Spacing
    name: str
    modality: str
    dim: int


def parse_case_name(name: str | Path) -> tuple[int, str, str]:
    """``2DBox_US_0001.npz`` -> ``(2, "US", "0001")``; raises :class:`CaseFormatError` otherwise."""
    base = Path(name).name
    m = _NAME_RE.match(base)
    if not m:
        raise CaseFormatError(
            f"{base}: not a challenge case name; expected 2DBox_<MODALITY>_<id>.npz or 3DBox_<MODALITY>_<id>.npz"
        )
    return int(m.group("dim")), m.group("mod"), m.group("id")


def spacing_to_array_order(stored: ArrayLike, order: str = "auto") -> tuple[tuple[float, ...], str]:
    """Array-axis-order spacing of a 3D case from its stored 3-vector, and what was done."""
    s = [float(v) for v in np.asarray(stored, dtype=np.float64).ravel()]
    if len(s) != 3:
        raise ValueError(f"3D spacing must have 3 values, got {s}")
    if order == "zyx":
        return tuple(s), "kept as (z, y, x) as requested"
    if order == "xyz":
        return tuple(s[::-1]), "read as (x, y, z) as requested and reversed"
    if order != "auto":
        raise ValueError("spacing order must be 'auto', 'xyz' or 'zyx'")

    def close(a: float, b: float) -> bool:
        return abs(a - b) <= 1e-6 * max(abs(a), abs(b), 1.0)

    if close(s[0], s[1]) and close(s[1], s[2]):
        return tuple(s), "isotropic, kept"
    if close(s[0], s[1]):
        return tuple(s[::-1]), "read as (x, y, z) (2024 convention) and reversed"
    if close(s[1], s[2]):
        return tuple(s), "already (z, y, x), kept"
    return tuple(s[::-1]), "ambiguous, read as (x, y, z) (2024 convention) and reversed"


# ----------------------------------------------------------------------------- npz


def _read_header(f: IO[bytes], label: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except CaseFormatError:
        raise
    except Exception as exc:
        raise CaseFormatError(f"{label} is not a valid .npy array ({_show(exc)}); save it with np.savez_compressed") from None
    return tuple(int(n) for n in shape), bool(fortran), dtype


def _missing_message(name: str, missing: list[str], present: dict[str, str]) -> str:
    """The error for required arrays absent from ``name``, listing (up to 10 of) the arrays it has."""
    shown = sorted(present)[:10]
    have = ", ".join(_show(repr(k)) for k in shown) or "none"
    if len(present) > len(shown):
        have += f" and {len(present) - len(shown)} more"
    return f"{name}: missing array {_show(', '.join(repr(k) for k in missing))} (arrays present: {have})"


def load_npz(
    path: str | Path,
    *,
    required_keys: tuple[str, ...] | list[str],
    optional_keys: tuple[str, ...] | list[str] = (),
    max_bytes: int = DEFAULT_MAX_BYTES,
    shape_check: Callable[[str, tuple[int, ...], np.dtype[Any]], None] | None = None,
) -> dict[str, np.ndarray]:
    """Load named arrays from an ``.npz`` without pickles and within a size limit.

    Parameters
    ----------
    path : path of the ``.npz`` file.
    required_keys : arrays that must be present.
    optional_keys : arrays loaded when present.
    max_bytes : limit on the decompressed size of the whole archive, checked from the
        zip headers (and each array's ``.npy`` header) before decompressing.
    shape_check : optional ``callable(key, shape, dtype)`` run on each array's header
        before its data is read; it raises :class:`CaseFormatError` to refuse.

    Raises
    ------
    CaseFormatError
        Unreadable or corrupt file, missing key, object/pickled array, oversize data.
    """
    path = Path(path)
    name = path.name
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise CaseFormatError(f"{name}: file not found") from None
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CaseFormatError(
            f"{name}: not a readable .npz (zip) archive ({_show(exc)}); write it with np.savez_compressed"
        ) from None
    out: dict[str, np.ndarray] = {}
    with zf:
        infos = {i.filename: i for i in zf.infolist()}
        total = sum(i.file_size for i in infos.values())
        if total > max_bytes:
            raise CaseFormatError(
                f"{name}: decompresses to {total} bytes, over the limit of {max_bytes} bytes; "
                "write only the arrays asked for, as compact integer types"
            )
        present = {k[:-4] if k.endswith(".npy") else k: k for k in infos}
        missing = [k for k in required_keys if k not in present]
        if missing:
            raise CaseFormatError(_missing_message(name, missing, present))
        for key in list(required_keys) + [k for k in optional_keys if k in present and k not in required_keys]:
            info = infos[present[key]]
            label = f"{name}: array {key!r}"
            try:
                with zf.open(info) as f:
                    shape, fortran, dtype = _read_header(f, label)
                    if dtype.hasobject:
                        raise CaseFormatError(
                            f"{label} holds Python objects (a pickle), which are never loaded; "
                            "save a plain numeric array"
                        )
                    if dtype.fields is not None or dtype.subdtype is not None:
                        raise CaseFormatError(f"{label} has a structured dtype {_show(dtype)}; save a plain numeric array")
                    nbytes = math.prod(shape) * dtype.itemsize
                    if nbytes > max_bytes:
                        raise CaseFormatError(
                            f"{label} declares {nbytes} bytes, over the limit of {max_bytes} bytes"
                        )
                    if shape_check is not None:
                        shape_check(key, shape, dtype)
                    buf = bytearray(nbytes)
                    view = memoryview(buf)
                    got = 0
                    while got < nbytes:
                        n = f.readinto(view[got:])  # type: ignore[attr-defined]  # ZipExtFile is a BufferedIOBase
                        if not n:
                            break
                        got += n
                    if got != nbytes:
                        raise CaseFormatError(f"{label} is truncated ({got} of {nbytes} bytes); write the file again")
            except CaseFormatError:
                raise
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as exc:
                raise CaseFormatError(f"{label} could not be decompressed ({_show(exc)}); the file is corrupt") from None
            arr = np.frombuffer(buf, dtype=dtype)
            arr = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
            out[key] = arr
    return out


# ----------------------------------------------------------------------------- NIfTI


def _is_nifti(path: Path) -> bool:
    n = path.name.lower()
    return n.endswith(".nii") or n.endswith(".nii.gz")


def load_label_map(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[np.ndarray, Spacing]:
    """A NIfTI label map and its spacing (header zooms, array-axis order).

    Trailing singleton axes beyond the third are dropped. Float-stored label maps are
    accepted when every value is a whole number.
    """
    import nibabel as nib

    path = Path(path)
    name = path.name
    try:
        img: Any = nib.load(str(path))
    except FileNotFoundError:
        raise CaseFormatError(f"{name}: file not found") from None
    except Exception as exc:
        raise CaseFormatError(f"{name}: not a readable NIfTI file ({_show(exc)})") from None
    shape = tuple(int(n) for n in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        raise CaseFormatError(f"{name}: label map has shape {_show(img.shape)}; expected a 2D or 3D image")
    dtype = img.get_data_dtype()
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > max_bytes:
        raise CaseFormatError(f"{name}: {nbytes} bytes of image data, over the limit of {max_bytes} bytes")
    try:
        data = np.asanyarray(img.dataobj).reshape(shape)
    except Exception as exc:
        raise CaseFormatError(f"{name}: image data could not be read ({_show(exc)}); the file is corrupt") from None
    if not (data.dtype == bool or np.issubdtype(data.dtype, np.integer)):
        if not np.issubdtype(data.dtype, np.floating) or not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise CaseFormatError(f"{name}: label map has non-integer values (dtype {_show(data.dtype)}); save integer labels")
        data = data.astype(np.int64)
    zooms = [float(z) for z in img.header.get_zooms()[: len(shape)]]
    return data, Spacing(zooms, zooms, "NIfTI header zooms, array-axis order")


# ----------------------------------------------------------------------------- cases


def _spacing_from_stored(name: str, stored: ArrayLike | None, dim: int, order: str) -> Spacing:
    if dim == 2:
        if stored is None:
            return Spacing((1.0, 1.0), (1.0, 1.0), "2D: pixel units")
        s = np.asarray(stored, dtype=np.float64).ravel()
        if s.size == 2 and np.all(np.isfinite(s)) and np.all(s > 0):
            return Spacing(s, s, "2D: as stored")
        return Spacing((1.0, 1.0), tuple(s), "2D: pixel units (stored value ignored)")
    if stored is None:
        raise CaseFormatError(f"{name}: 3D case without a 'spacing' array; store the voxel size in mm")
    s = np.asarray(stored, dtype=np.float64).ravel()
    if s.size != 3 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise CaseFormatError(f"{name}: 'spacing' must be 3 positive numbers, got {s.tolist()}")
    values, note = spacing_to_array_order(s, order)
    return Spacing(values, tuple(s), note)


def _dim_of(name: str, arr_ndim: int) -> int:
    try:
        return parse_case_name(name)[0]
    except CaseFormatError:
        return arr_ndim


def load_case_input(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES, spacing_order: str = "auto") -> CaseInput:
    """An input case (``imgs``, ``boxes`` and, for 3D, ``spacing``) from a challenge ``.npz``."""
    path = Path(path)
    name = path.name
    dim, modality, _ = parse_case_name(name)
    d = load_npz(path, required_keys=("imgs", "boxes"), optional_keys=("spacing",), max_bytes=max_bytes)
    imgs, boxes = d["imgs"], d["boxes"]
    if dim == 2 and not (imgs.ndim == 2 or (imgs.ndim == 3 and imgs.shape[-1] in (1, 3, 4))):
        raise CaseFormatError(f"{name}: 'imgs' has shape {imgs.shape}; a 2D case needs (H, W) or (H, W, 3)")
    if dim == 3 and imgs.ndim != 3:
        raise CaseFormatError(f"{name}: 'imgs' has shape {imgs.shape}; a 3D case needs (D, H, W)")
    width = 4 if dim == 2 else 6
    boxes = np.asarray(boxes)
    if boxes.ndim == 1 and boxes.size == width:
        boxes = boxes[None, :]
    if boxes.ndim != 2 or boxes.shape[1] != width or not np.issubdtype(boxes.dtype, np.number):
        raise CaseFormatError(f"{name}: 'boxes' has shape {boxes.shape}; a {dim}D case needs (N, {width}) numbers")
    spacing = _spacing_from_stored(name, d.get("spacing"), dim, spacing_order)
    return CaseInput(imgs=imgs, boxes=boxes, spacing=spacing, name=name, modality=modality, dim=dim)


def load_ground_truth(
    path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES, spacing_order: str = "auto"
) -> tuple[np.ndarray, Spacing]:
    """Ground-truth label map and its spacing (array-axis order; ``.stored`` as stored).

    ``.npz`` with ``gts`` (and ``spacing`` for 3D), or NIfTI ``.nii`` / ``.nii.gz``.
    """
    path = Path(path)
    if _is_nifti(path):
        return load_label_map(path, max_bytes=max_bytes)
    name = path.name
    d = load_npz(path, required_keys=("gts",), optional_keys=("spacing",), max_bytes=max_bytes)
    gts = d["gts"]
    if not (gts.dtype == bool or np.issubdtype(gts.dtype, np.integer)):
        raise CaseFormatError(f"{name}: 'gts' has dtype {gts.dtype}; ground truth must be an integer label map")
    if gts.ndim not in (2, 3):
        raise CaseFormatError(f"{name}: 'gts' has shape {gts.shape}; expected (H, W) or (D, H, W)")
    dim = _dim_of(name, gts.ndim)
    if dim != gts.ndim:
        raise CaseFormatError(f"{name}: 'gts' has shape {gts.shape} but the name says {dim}D")
    return gts, _spacing_from_stored(name, d.get("spacing"), dim, spacing_order)


def load_prediction(
    path: str | Path, *, expected_shape: tuple[int, ...], max_bytes: int | None = None, profile: str | None = None
) -> np.ndarray:
    """A participant's output label map (``segs`` in ``.npz``, or NIfTI), validated.

    Checks: the file is readable, holds no pickle, has ``segs``, an integer or boolean
    dtype, the input's spatial shape, non-negative labels and a decompressed size within
    ``max_bytes`` (default: 8 bytes per voxel of ``expected_shape`` plus 64 MiB).

    ``profile``: under a profile that scores predictions as its reference script did
    (``cvpr24``, ``cvpr25``: :data:`evaluator.profiles.REFERENCE_VALUE_PROFILES`), float and
    negative-valued ``segs`` are accepted and returned as written (the scorer then counts a
    voxel for class i when its value equals i, as the reference's ``seg == i``).
    """
    from .profiles import REFERENCE_VALUE_PROFILES, get_profile

    lenient = profile is not None and get_profile(profile).name in REFERENCE_VALUE_PROFILES
    path = Path(path)
    name = path.name
    expected = tuple(int(n) for n in expected_shape)
    if max_bytes is None:
        max_bytes = 8 * math.prod(expected) + 64 * 1024**2

    def fix_shape(shape: tuple[int, ...]) -> str:
        return (
            f"output {name}: array 'segs' has shape {_show(tuple(shape))} but the input's spatial shape is "
            f"{expected}; write a label map of the input's shape"
        )

    def check(key: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        numeric = dtype == np.bool_ or np.issubdtype(dtype, np.integer)
        if lenient and np.issubdtype(dtype, np.floating):
            numeric = True
        if not numeric:
            raise CaseFormatError(
                f"output {name}: array 'segs' has dtype {_show(dtype)}; write an integer label map "
                "(e.g. segs.astype(np.uint8)), label i for box i"
            )
        if tuple(shape) != expected:
            raise CaseFormatError(fix_shape(shape))

    if _is_nifti(path):
        try:
            segs, _ = load_label_map(path, max_bytes=max_bytes)
        except CaseFormatError as exc:
            raise CaseFormatError(f"output {exc}") from None
        if tuple(segs.shape) != expected:
            raise CaseFormatError(fix_shape(segs.shape))
    else:
        try:
            segs = load_npz(path, required_keys=("segs",), max_bytes=max_bytes, shape_check=check)["segs"]
        except CaseFormatError as exc:
            msg = str(exc)
            raise CaseFormatError(msg if msg.startswith("output ") else f"output {msg}") from None
    if not lenient and segs.dtype.kind == "i" and segs.size and int(segs.min()) < 0:
        raise CaseFormatError(f"output {name}: array 'segs' has negative labels; use 0 for background and i for box i")
    return segs
