"""Local-file storage of uploaded archives, run logs and outputs, and test sets.

Layout under ``storage_dir``::

    uploads/<upload id>.part        resumable upload in progress
    images/<submission id>/image.tar[.gz]   stored archive (read-only once complete)
    runs/<run id>/<case id>/...     per-case stdout/stderr and the outputs the container wrote
    testsets/<name>/                materialized test sets (inputs/ and gts/)

Writes are atomic (write to a temporary name, then rename), so a crash never leaves a half file
under a final name.

Objects. The same layout is also a key space (``images/5/image.tar.gz`` is the key of the file
``<storage_dir>/images/5/image.tar.gz``), served by one of two backends with one interface
(:class:`ObjectStore`: ``put_file``, ``move_in``, ``put_stream``, ``get_to_file``, ``open_read``,
``iter_bytes``, ``delete``, ``delete_prefix``, ``exists``, ``size``, ``keys``):

* :class:`Storage`, the local directory (``SEGARENA_STORAGE_URL`` empty: ``SEGARENA_STORAGE_DIR``); it also
  keeps the path helpers above for what needs a real file (the sandbox bind-mounts case directories,
  resumable uploads append to a ``.part`` file);
* :class:`S3Storage`, S3-compatible object storage (``SEGARENA_STORAGE_URL=s3://bucket/prefix`` plus
  ``SEGARENA_S3_*``): objects are written by multipart upload in parts of ``s3_part_bytes`` (never held
  whole in memory) and read back in chunks. Its local working files (upload staging, scratch, case
  directories) stay under ``storage_dir`` on the host (:attr:`S3Storage.staging`).

``Storage.from_settings`` picks the backend. Keys are ``/``-separated relative names of safe segments; a
key that could escape (``..``, a leading ``/``, a backslash, a dot segment, control characters) is refused
with :class:`BadKey` by both backends alike.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

__all__ = ["Storage", "StorageError", "ObjectStore", "S3Storage", "BadKey", "ObjectNotFound", "check_key",
           "parse_storage_url", "archive_key", "object_response"]

DEFAULT_CHUNK = 8 << 20
KEY_MAX_CHARS = 1024
_SEGMENT = re.compile(r"[A-Za-z0-9_~+=@,-][A-Za-z0-9._~+=@,-]{0,254}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


_S3_LOCK = threading.Lock()
_BOTO_LOCK = threading.Lock()
_BOTO: dict[str, Any] = {}  # "session": the boto3 session S3 clients are made from (one per process)
_S3_STORES: dict[tuple, S3Storage] = {}


class StorageError(RuntimeError):
    """The storage directory cannot be written or read (an infrastructure failure)."""


class ObjectNotFound(StorageError):
    """No object under that key."""


class BadKey(ValueError):
    """A key that is not a safe relative name (it could escape the storage area)."""


def check_key(key: str, *, prefix: bool = False) -> str:
    """``key`` if it is ``seg/seg/…`` of safe segments (letters, digits, ``._~+=@,-``, not starting with a dot);
    with ``prefix=True`` a folder prefix ending in ``/`` (or empty: everything). Else :class:`BadKey`."""
    if not isinstance(key, str):
        raise BadKey(f"a storage key is a string, not {type(key).__name__}")
    if prefix:
        if key == "":
            return key
        if not key.endswith("/"):
            raise BadKey(f"the prefix {key[:80]!r} must end with '/' (a folder)")
    if not key or len(key) > KEY_MAX_CHARS:
        raise BadKey(f"a storage key has 1 to {KEY_MAX_CHARS} characters")
    for part in (key[:-1] if prefix else key).split("/"):
        if not _SEGMENT.fullmatch(part):
            raise BadKey(f"the storage key {key[:120]!r} has an unsafe segment {part[:60]!r}: use letters, digits and "
                         "._~+=@,- (not starting with a dot), separated by single '/'")
    return key


def archive_key(token: str | int, *, compressed: bool) -> str:
    """The key of a stored image archive: ``images/<submission id or token>/image.tar[.gz]``."""
    return check_key(f"images/{token}/" + ("image.tar.gz" if compressed else "image.tar"))


def write_atomic(path: Path, tmp: Path, chunks: Iterable[bytes]) -> int:
    """Write ``chunks`` to ``tmp``, then rename it to ``path`` (readers never see a partial file; ``tmp`` is removed
    whatever happens); returns the number of bytes written."""
    n = 0
    try:
        with open(tmp, "wb") as f:
            for block in chunks:
                f.write(block)
                n += len(block)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def parse_storage_url(url: str) -> tuple[str, str, str]:
    """``''`` → ``('local', '', '')`` (storage_dir); ``file:///path`` or ``/path`` → ``('local', path, '')``;
    ``s3://bucket/prefix`` → ``('s3', bucket, 'prefix/')``. Raises ValueError naming what is wrong."""
    url = (url or "").strip()
    if not url:
        return "local", "", ""
    if url.startswith("file://"):
        path = url[len("file://"):]
        if not path.startswith("/"):
            raise ValueError(f"SEGARENA_STORAGE_URL: {url!r} is not file:///absolute/path")
        return "local", path, ""
    if "://" not in url:
        return "local", url, ""
    if not url.startswith("s3://"):
        raise ValueError(f"SEGARENA_STORAGE_URL: the scheme of {url.split('://', 1)[0]!r} is not supported; use a "
                         "local directory (file:///path) or S3-compatible storage (s3://bucket/prefix)")
    rest = url[len("s3://"):]
    if "@" in rest or "?" in rest or "#" in rest:
        raise ValueError("SEGARENA_STORAGE_URL: write s3://bucket/prefix only; credentials go in "
                         "SEGARENA_S3_ACCESS_KEY_ID and SEGARENA_S3_SECRET_ACCESS_KEY, the server in SEGARENA_S3_ENDPOINT_URL")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(f"SEGARENA_STORAGE_URL: {bucket!r} is not a valid bucket name (3-63 characters: lower-case "
                         "letters, digits, '.' and '-', starting and ending with a letter or digit)")
    prefix = prefix.strip("/")
    if prefix:
        try:
            check_key(prefix + "/", prefix=True)
        except BadKey as exc:
            raise ValueError(f"SEGARENA_STORAGE_URL: bad prefix: {exc}") from None
        prefix += "/"
    return "s3", bucket, prefix


class ObjectStore:
    """What both backends offer: objects under safe keys, written and read as streams of bounded chunks."""

    kind = "?"
    local = False

    def put_file(self, key: str, path: Path) -> int:
        """Copy the file ``path`` to ``key`` (the file stays); returns its size."""
        raise NotImplementedError

    def move_in(self, key: str, path: Path) -> int:
        """Store the file ``path`` under ``key`` and remove ``path``; returns its size."""
        raise NotImplementedError

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store the concatenated ``chunks`` under ``key`` (held one part at a time); returns the size."""
        raise NotImplementedError

    def get_to_file(self, key: str, path: Path, *, chunk: int = DEFAULT_CHUNK) -> int:
        """Write the object to the file ``path`` (atomically: a temporary name, then a rename); returns its size."""
        path = Path(path)
        return write_atomic(path, path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"), self.iter_bytes(key, chunk))

    def open_read(self, key: str) -> BinaryIO:
        raise NotImplementedError

    def iter_bytes(self, key: str, chunk: int = DEFAULT_CHUNK) -> Iterator[bytes]:
        """The object's bytes in chunks of at most ``chunk`` bytes."""
        f = self.open_read(key)
        try:
            while block := f.read(chunk):
                yield block
        finally:
            f.close()

    def delete(self, key: str) -> None:
        """Remove the object (nothing if there is none)."""
        raise NotImplementedError

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under the folder ``prefix`` (ends with ``/``); returns how many."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def size(self, key: str) -> int:
        """The object's size in bytes (:class:`ObjectNotFound` if there is none)."""
        raise NotImplementedError

    def keys(self, prefix: str = "") -> Iterator[str]:
        """The keys under the folder ``prefix``, in no particular order."""
        raise NotImplementedError

    def describe(self) -> dict:
        """For ``/health`` (organizers): kind, where, and whether it answers; no secrets."""
        raise NotImplementedError

    @classmethod
    def from_settings(cls, settings=None, *, probe: bool = False) -> Storage | S3Storage:
        """The backend ``settings`` name: S3-compatible storage for ``storage_url=s3://…``, else the local
        directory ``storage_dir`` (the embedded default). ``probe``: short timeouts, no retries (health checks)."""
        if settings is None:
            from api.settings import get_settings

            settings = get_settings()
        kind, bucket, prefix = parse_storage_url(getattr(settings, "storage_url", "") or "")
        if kind == "s3":
            secret = getattr(settings, "s3_secret_access_key", None)
            if secret is not None and hasattr(secret, "get_secret_value"):
                secret = secret.get_secret_value()
            # one S3Storage (one boto3 client: thread-safe, ~0.1-0.2 s to create) per configuration and process
            config = (bucket, prefix, settings.s3_endpoint_url or None, settings.s3_region or None,
                      settings.s3_access_key_id or None, secret or None, int(settings.s3_part_bytes),
                      str(settings.storage_dir), probe)
            with _S3_LOCK:
                store = _S3_STORES.get(config)
            if store is None:
                store = S3Storage(bucket, prefix, endpoint_url=config[2], region=config[3], access_key_id=config[4],
                                  secret_access_key=config[5], part_bytes=config[6],
                                  staging=Storage(settings.storage_dir),
                                  **({"connect_timeout": 2, "read_timeout": 5, "max_attempts": 1} if probe else {}))
                with _S3_LOCK:
                    if len(_S3_STORES) >= 32:
                        _S3_STORES.pop(next(iter(_S3_STORES)))
                    store = _S3_STORES.setdefault(config, store)
            return store
        return Storage(settings.storage_dir)


def object_response(store: ObjectStore, key: str, *, filename: str | None = None, headers: dict | None = None,
                    media_type: str = "application/octet-stream", chunk: int = DEFAULT_CHUNK):
    """A streamed HTTP response of the object ``key``: the file itself (``FileResponse``, ranges included) from
    the local directory, the object streamed in ``chunk``-byte pieces (with its Content-Length) from S3.
    Raises :class:`ObjectNotFound` when there is none."""
    from starlette.responses import FileResponse, StreamingResponse

    name = filename or key.rsplit("/", 1)[-1]
    if isinstance(store, Storage):
        path = store.path_of(key)
        if not path.is_file():
            raise ObjectNotFound(f"no object {key!r} in the storage directory")
        return FileResponse(path, media_type=media_type, filename=name, headers=headers)
    size = store.size(key)
    extra = {**(headers or {}), "Content-Length": str(size),
             "Content-Disposition": f'attachment; filename="{name}"'}
    return StreamingResponse(store.iter_bytes(key, chunk), media_type=media_type, headers=extra)


class Storage(ObjectStore):
    """The local storage directory: path helpers and the object interface over the same files."""

    kind = "local"
    local = True

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def staging(self) -> Storage:
        """Where local working files go (the directory itself)."""
        return self

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

    # ---- the object interface ---------------------------------------------------------------
    def path_of(self, key: str) -> Path:
        """The file of ``key`` (checked: never outside the storage directory, symlinks included)."""
        check_key(key)
        path = self.root / key
        root = self.root.resolve()
        if not path.resolve().is_relative_to(root):
            raise BadKey(f"the storage key {key[:120]!r} leads outside the storage directory")
        return path

    def _new_file(self, key: str) -> tuple[Path, Path]:
        dest = self.path_of(key)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {dest.parent}: {exc.strerror}") from exc
        return dest, dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")

    def put_file(self, key: str, path: Path) -> int:
        dest, tmp = self._new_file(key)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest.stat().st_size

    def move_in(self, key: str, path: Path) -> int:
        dest = self.path_of(key)
        self.atomic_move(Path(path), dest)
        return dest.stat().st_size

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        dest, tmp = self._new_file(key)
        return write_atomic(dest, tmp, chunks)

    def open_read(self, key: str) -> BinaryIO:
        path = self.path_of(key)
        try:
            if not path.is_file():
                raise FileNotFoundError(path)
            return open(path, "rb")
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key!r} in the storage directory") from None

    def delete(self, key: str) -> None:
        path = self.path_of(key)
        if not path.is_dir():
            path.unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        check_key(prefix, prefix=True)
        if not prefix:
            raise BadKey("refusing to delete the whole storage directory; name a folder prefix")
        folder = self.path_of(prefix[:-1])
        if not folder.is_dir() or folder.is_symlink():
            return 0
        n = sum(1 for p in folder.rglob("*") if p.is_file())
        shutil.rmtree(folder, ignore_errors=True)
        return n

    def exists(self, key: str) -> bool:
        return self.path_of(key).is_file()

    def size(self, key: str) -> int:
        path = self.path_of(key)
        if not path.is_file():
            raise ObjectNotFound(f"no object {key!r} in the storage directory")
        return path.stat().st_size

    def keys(self, prefix: str = "") -> Iterator[str]:
        check_key(prefix, prefix=True)
        folder = self.path_of(prefix[:-1]) if prefix else self.root
        if not folder.is_dir():
            return
        for p in folder.rglob("*"):
            if p.is_file() and not p.name.endswith(".tmp"):
                yield str(p.relative_to(self.root))

    def describe(self) -> dict:
        root = self.root
        ok = root.is_dir() and os.access(root, os.W_OK | os.X_OK)
        info = {"ok": ok, "kind": "local", "url": f"file://{root}"}
        if not ok:
            info["error"] = f"{root} is not a writable directory"
        return info


# -------------------------------------------------------------------------------------------------
# S3-compatible object storage
# -------------------------------------------------------------------------------------------------
_MIN_PART = 5 << 20  # S3's smallest part (but the last)
_MAX_PARTS = 10_000


class S3Storage(ObjectStore):
    """Objects in ``bucket`` under ``prefix`` on an S3-compatible server (MinIO, AWS S3, Ceph RGW…)."""

    kind = "s3"
    local = False

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, region: str | None = None,
                 access_key_id: str | None = None, secret_access_key: str | None = None,
                 part_bytes: int = 8 << 20, staging: Storage | None = None, connect_timeout: float = 5,
                 read_timeout: float = 60, max_attempts: int = 4) -> None:
        import boto3
        from botocore.config import Config

        if prefix:
            check_key(prefix, prefix=True)
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.region = region
        self.part_bytes = max(int(part_bytes), _MIN_PART)
        self._staging = staging
        config = Config(signature_version="s3v4", connect_timeout=connect_timeout, read_timeout=read_timeout,
                        retries={"max_attempts": max_attempts, "mode": "standard"},
                        s3={"addressing_style": "path" if endpoint_url else "auto"})
        with _BOTO_LOCK:  # a boto3 session is not thread-safe; the clients it makes are
            # one session per process: it keeps the parsed service models, so a client costs ~17 ms of CPU, not ~78
            session = _BOTO.get("session") or _BOTO.setdefault("session", boto3.session.Session())
            self.client = session.client(
                "s3", endpoint_url=endpoint_url, region_name=region or "us-east-1", aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key, config=config)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def staging(self) -> Storage:
        """The local directory of this host's working files (upload staging, scratch); not the objects."""
        if self._staging is None:
            raise StorageError("this S3 storage has no local staging directory")
        return self._staging

    # ---- this host's working files (local paths under storage_dir, never objects) ----
    @property
    def root(self) -> Path:
        return self.staging.root

    def upload_part(self, upload_id: str) -> Path:
        return self.staging.upload_part(upload_id)

    def run_dir(self, run_id: int) -> Path:
        return self.staging.run_dir(run_id)

    def case_dir(self, run_id: int, case_id: str) -> Path:
        return self.staging.case_dir(run_id, case_id)

    def testset_dir(self, name: str) -> Path:
        return self.staging.testset_dir(name)

    def scratch_dir(self) -> Path:
        return self.staging.scratch_dir()

    def _no_path(self, what: str) -> NoReturn:
        raise StorageError(f"{what}: with S3 storage ({self.url}) stored archives and outputs are objects, not files; "
                           "read them with iter_bytes/get_to_file and write them with put_file/move_in")

    def image_dir(self, submission_id: int) -> Path:
        self._no_path("image_dir")

    def resolve(self, rel: str) -> Path:
        self._no_path(f"resolve({rel[:80]!r})")

    def relative(self, path: Path) -> str:
        self._no_path("relative")

    # ---- errors ----
    def _fail(self, exc: BaseException, what: str, key: str = "") -> StorageError:
        from api.health import redact_text

        code = ""
        response = getattr(exc, "response", None) or {}
        code = str((response.get("Error") or {}).get("Code", ""))
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchKey", "NotFound") or (status == 404 and code != "NoSuchBucket"):
            return ObjectNotFound(f"no object {key!r} in {self.url}")
        text = redact_text(str(exc).splitlines()[0][:300] if str(exc) else exc.__class__.__name__)
        return StorageError(f"object storage {self.url} ({redact_text(self.endpoint_url or 'AWS')}): cannot {what}: {text}")

    def _k(self, key: str) -> str:
        return self.prefix + check_key(key)

    # ---- writes ----
    def _parts(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Re-cut ``chunks`` into parts of exactly ``part_bytes`` (the last one shorter)."""
        size = self.part_bytes
        buf = bytearray()
        for block in chunks:
            if not block:
                continue
            if not buf and len(block) == size:
                yield bytes(block)
                continue
            buf += block
            while len(buf) >= size:
                yield bytes(buf[:size])
                del buf[:size]
        if buf:
            yield bytes(buf)

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        k = self._k(key)
        parts = self._parts(chunks)
        first = next(parts, b"")
        second = next(parts, None)
        try:
            if second is None:  # one part: a plain PUT
                self.client.put_object(Bucket=self.bucket, Key=k, Body=first)
                return len(first)
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=k)["UploadId"]
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, f"write {key!r}", key) from None
        done: list[dict] = []
        total = 0
        try:
            pending: bytes | None = first
            number = 0
            while pending is not None:
                number += 1
                if number > _MAX_PARTS:
                    raise StorageError(f"{key!r} needs more than {_MAX_PARTS} parts of {self.part_bytes} bytes; "
                                       "raise SEGARENA_S3_PART_BYTES")
                answer = self.client.upload_part(Bucket=self.bucket, Key=k, UploadId=upload_id, PartNumber=number,
                                                 Body=pending)
                done.append({"PartNumber": number, "ETag": answer["ETag"]})
                total += len(pending)
                if second is not None:
                    pending, second = second, None
                else:
                    pending = next(parts, None)
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=k, UploadId=upload_id,
                                                  MultipartUpload={"Parts": done})
        except BaseException as exc:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=k, UploadId=upload_id)
            except Exception:
                pass
            if isinstance(exc, (BotoCoreError, ClientError)):
                raise self._fail(exc, f"write {key!r}", key) from None
            raise
        return total

    def put_file(self, key: str, path: Path) -> int:
        size = self.part_bytes

        def blocks():
            with open(path, "rb") as f:
                while block := f.read(size):
                    yield block

        return self.put_stream(key, blocks())

    def move_in(self, key: str, path: Path) -> int:
        n = self.put_file(key, path)
        Path(path).unlink(missing_ok=True)
        return n

    # ---- reads ----
    def open_read(self, key: str) -> BinaryIO:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._k(key))["Body"]
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, f"read {key!r}", key) from None

    def iter_bytes(self, key: str, chunk: int = DEFAULT_CHUNK) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        body = self.open_read(key)
        try:
            yield from body.iter_chunks(chunk)  # type: ignore[attr-defined]  # a botocore StreamingBody
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, f"read {key!r}", key) from None
        finally:
            body.close()

    def _head(self, key: str) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._k(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, f"look up {key!r}", key) from None

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except ObjectNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def keys(self, prefix: str = "") -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        check_key(prefix, prefix=True)
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
            for page in pages:
                for item in page.get("Contents", []):
                    yield item["Key"][len(self.prefix):]
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, f"list {prefix!r}") from None

    # ---- deletes ----
    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._k(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, f"delete {key!r}", key) from None

    def delete_prefix(self, prefix: str) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        check_key(prefix, prefix=True)
        if not prefix:
            raise BadKey("refusing to delete the whole bucket prefix; name a folder prefix")
        n = 0
        batch: list[str] = []
        try:
            for key in list(self.keys(prefix)):
                batch.append(self.prefix + key)
                if len(batch) == 1000:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
                    n, batch = n + len(batch), []
            if batch:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
                n += len(batch)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, f"delete {prefix!r}") from None
        return n

    # ---- the bucket ----
    def ensure_bucket(self) -> bool:
        """Create the bucket if it is absent; True if it was created."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return False
        except ClientError as exc:
            status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if status != 404:
                raise self._fail(exc, "look up the bucket") from None
        except BotoCoreError as exc:
            raise self._fail(exc, "look up the bucket") from None
        try:
            extra = {}
            if self.region and self.region != "us-east-1":
                extra["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            self.client.create_bucket(Bucket=self.bucket, **extra)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, "create the bucket") from None
        return True

    def describe(self) -> dict:
        from api.health import redact_url

        info: dict[str, Any] = {"kind": "s3", "url": redact_url(self.url), "endpoint": redact_url(self.endpoint_url or "(AWS)"),
                "bucket": self.bucket}
        try:
            from botocore.exceptions import BotoCoreError, ClientError

            try:
                answer = self.client.head_bucket(Bucket=self.bucket)
                server = (answer.get("ResponseMetadata") or {}).get("HTTPHeaders", {}).get("server", "")
                info.update(ok=True, version=server[:100] or "unknown")
            except (BotoCoreError, ClientError) as exc:
                info.update(ok=False, error=str(self._fail(exc, "reach the bucket")))
        except Exception as exc:
            from api.health import redact_text

            info.update(ok=False, error=redact_text(str(exc)[:300]))
        return info
