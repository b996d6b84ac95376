"""Byte-for-byte reproducible ``.npz`` writing and safe reading.

``np.savez_compressed`` stamps the current time into every zip member header, so two runs
of the generator would differ in their bytes (and checksums). :func:`write_npz` writes the
same zip structure with a fixed ``date_time`` and a fixed compression level; the result is
readable by ``np.load`` like any ``savez_compressed`` file.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["write_npz", "read_npz", "sha256_file", "npz_keys"]

_FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def write_npz(path: str | os.PathLike[str], **arrays: np.ndarray) -> int:
    """Write ``arrays`` to ``path`` deterministically; return the number of bytes written.

    Members are written in the order given, each as ``<key>.npy`` (NPY format 1.0,
    C order, no pickles), deflated at level 6, with a fixed timestamp and permissions.
    The file is written to a temporary name and renamed, so readers never see half a file.
    """
    path = Path(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, mode="w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for key, value in arrays.items():
            arr = np.ascontiguousarray(value)
            if arr.dtype.hasobject:
                raise TypeError(f"array {key!r} has object dtype; refusing to write pickles")
            member = io.BytesIO()
            np.lib.format.write_array(member, arr, version=(1, 0), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, member.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=6)
    data = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return len(data)


def read_npz(path: str | os.PathLike[str], keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Load an ``.npz`` without pickles; return the requested keys (all if ``None``)."""
    with np.load(path, allow_pickle=False) as f:
        names = list(f.files) if keys is None else list(keys)
        return {k: f[k] for k in names if k in f.files}


def npz_keys(path: str | os.PathLike[str]) -> list[str]:
    """Names of the arrays stored in an ``.npz`` without reading them."""
    with zipfile.ZipFile(path) as zf:
        return [n[:-4] if n.endswith(".npy") else n for n in zf.namelist()]


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
