"""Local-file storage of uploaded archives, run logs and outputs, and test sets.

Layout under ``storage_dir``::

    uploads/<upload id>.part        resumable upload in progress
    images/<submission id>/image.tar[.gz]   stored archive (read-only once complete)
    runs/<run id>/<case id>/...     per-case stdout/stderr and the outputs the container wrote
    testsets/<name>/                materialized test sets (inputs/ and gts/)

Writes are atomic (write to a temporary name, then rename), so a crash never leaves a half file
under a final name.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["Storage", "StorageError"]


class StorageError(RuntimeError):
    """The storage directory cannot be written or read (an infrastructure failure)."""


class Storage:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def from_settings(cls, settings=None) -> "Storage":
        if settings is None:
            from api.settings import get_settings

            settings = get_settings()
        return cls(settings.storage_dir)

    def _dir(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {path}: {exc.strerror}") from exc
        return path

    def upload_part(self, upload_id: str) -> Path:
        return self._dir("uploads") / f"{upload_id}.part"

    def image_dir(self, submission_id: int) -> Path:
        return self._dir("images", str(submission_id))

    def run_dir(self, run_id: int) -> Path:
        return self._dir("runs", str(run_id))

    def case_dir(self, run_id: int, case_id: str) -> Path:
        if "/" in case_id or case_id.startswith("."):
            raise ValueError(f"bad case id {case_id!r}")
        return self._dir("runs", str(run_id), case_id)

    def testset_dir(self, name: str) -> Path:
        return self._dir("testsets", name)

    def scratch_dir(self) -> Path:
        return self._dir("scratch")

    def relative(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.root.resolve()))

    def resolve(self, rel: str) -> Path:
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise StorageError(f"path {rel!r} escapes the storage directory")
        return path

    @staticmethod
    def atomic_move(src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.move(str(src), str(tmp))
        os.replace(tmp, dst)

    @staticmethod
    def remove(path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
