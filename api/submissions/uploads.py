"""Receiving image archives: one-shot streamed bodies and resumable upload sessions (Content-Range chunks).

One shot: the body streams to ``storage/uploads/<random>.part`` while it is hashed and checked; a
rejected archive is deleted before the answer goes out.

Resumable: ``POST …/uploads`` opens a session, ``PUT /api/uploads/{id}`` appends the chunk whose
``Content-Range`` starts exactly at ``received_bytes`` (else 416 with ``expected_offset``). A chunk cut
off by a dropped connection keeps the bytes that did arrive. SHA-256 and archive checks run while the
chunks stream, with their state kept in this process (``hashlib`` state cannot be stored) within a memory
budget over all sessions (``upload_state_cache_bytes``); if the chunks came through several processes, this
one restarted or the budget evicted the state, ``complete`` re-reads the file once instead.

A team has at most ``max_open_uploads_per_team`` open sessions; each holds a quota slot of its track until
it completes, is deleted (``DELETE /api/uploads/{id}``) or goes stale (``upload_stale_after_s`` without a
chunk; the reaper then expires it and deletes its bytes). The track's close time is checked again on
completion: a session opened before it may complete within the track's ``upload_grace_s``.
Concurrent writes to one session are refused (an exclusive ``flock`` on its file).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import secrets
import threading
import uuid
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from api.audit import record
from api.db import get_sessionmaker
from api.errors import ApiError
from api.models import Member, Upload, UploadState, utcnow
from api.params import as_utc
from api.storage import Storage
from api.submissions import schemas, service
from api.submissions.archive import ArchiveError, ArchiveInspector, ArchiveLimits
from api.submissions.streaming import ArchiveSink, Disconnected, TooLarge, pump, storage_error

__all__ = ["receive_archive", "create_upload", "upload_status", "put_chunk", "complete_upload", "abort_upload",
           "ACCEPTED_TYPES", "expire_stale_uploads"]

ACCEPTED_TYPES = {"application/octet-stream", "application/x-tar", "application/tar", "application/gzip",
                  "application/x-gzip", "application/x-gtar", "application/x-compressed-tar"}
_RANGE = re.compile(r"^bytes (\d{1,19})-(\d{1,19})/(\d{1,19})$")
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


def max_uncompressed(settings) -> int:
    """An archive may unpack to at most 4x the upload limit (stops gzip bombs)."""
    return 4 * settings.max_upload_bytes


def _check_content_type(request: Request) -> None:
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype and ctype not in ACCEPTED_TYPES:
        raise ApiError(415, "unsupported_media_type", f"send the archive itself as the request body with Content-Type "
                       f"application/octet-stream (or application/x-tar, application/gzip), not {ctype}")


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        raise ApiError(400, "bad_request", "the Content-Length header is not a number") from None
    if n < 0:
        raise ApiError(400, "bad_request", "the Content-Length header is negative")
    return n


def _too_large(settings) -> ApiError:
    gib = settings.max_upload_bytes / 1024**3
    return ApiError(413, "too_large", f"the archive is larger than the limit of {settings.max_upload_bytes} bytes "
                    f"({gib:.3g} GiB); make the image smaller (e.g. a slimmer base image, docker-slim)")


def _invalid(exc: ArchiveError) -> ApiError:
    return ApiError(422, "invalid_archive", f"the uploaded file is not an acceptable image archive: {exc}")


# ---------------------------------------------------------------------------------------------
# one shot
# ---------------------------------------------------------------------------------------------
async def receive_archive(request: Request, settings) -> service.Staged:
    """Stream the request body into storage, hashing and checking it; returns the staged archive."""
    _check_content_type(request)
    declared = _declared_length(request)
    if declared is not None and declared > settings.max_upload_bytes:
        raise _too_large(settings)
    storage = Storage(settings.storage_dir)
    path = storage.upload_part("oneshot-" + uuid.uuid4().hex)
    try:
        sink = ArchiveSink(path, inspector=_inspector(settings))
    except OSError as exc:
        raise storage_error(exc) from None
    ok = False
    try:
        try:
            received = await pump(request.stream(), sink, limit=settings.max_upload_bytes,
                                  chunk_bytes=settings.upload_chunk_bytes)
        except TooLarge:
            raise _too_large(settings) from None
        except Disconnected as exc:
            raise ApiError(400, "incomplete_upload", f"the connection closed after {exc.args[0]} bytes; upload again, "
                           "or use a resumable upload (POST …/uploads) on unreliable links") from None
        except OSError as exc:
            raise storage_error(exc) from None
        finally:
            sink.close()
        if received == 0:
            raise ApiError(422, "invalid_archive", "the request body is empty; send the docker save archive as the body")
        if sink.archive_error is not None:
            raise _invalid(sink.archive_error)
        try:
            info = await run_in_threadpool(sink.inspector.finish, read_back=path)
        except ArchiveError as exc:
            raise _invalid(exc) from None
        ok = True
        return service.Staged(path=path, sha256=sink.hasher.hexdigest(), size=received, info=info,
                              filename=request.query_params.get("filename", "")[:255])
    finally:
        if not ok:
            Storage.remove(path)


# ---------------------------------------------------------------------------------------------
# resumable
# ---------------------------------------------------------------------------------------------
@dataclass
class _Progress:
    offset: int
    hasher: Any  # a hashlib.sha256() in progress
    inspector: ArchiveInspector


def _footprint(item: _Progress) -> int:
    """About how many bytes of memory ``item`` holds: the archive members' kept contents and records, the
    partial header and extended-header buffers, the gzip window, the hash state."""
    insp = item.inspector
    state = getattr(insp, "state", None)
    members = getattr(state, "members", None) or {}
    size = 4096  # the objects themselves and the SHA-256 state
    for m in members.values():
        size += 256 + len(m.name) + len(getattr(m, "linkname", "") or "") + len(getattr(m, "data", None) or b"")
    for attr in ("_collect", "_hdr", "_sniff"):
        buf = getattr(insp, attr, None)
        if buf:
            size += len(buf)
    if getattr(insp, "_inflater", None) is not None:
        size += 64 << 10  # zlib's inflate state and 32 KiB window
    return size


class _ProgressCache:
    """Per-upload hash and inspection state of this process, bounded in bytes over all sessions together
    (``settings.upload_state_cache_bytes``); least recently used entries go first, and a session whose
    state is gone is re-read once from disk on ``complete`` (its chunks are then only written)."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, tuple[_Progress, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0

    def take(self, upload_id: str, offset: int) -> _Progress | None:
        with self._lock:
            entry = self._items.pop(upload_id, None)
            if entry is not None:
                self.nbytes -= entry[1]
        return entry[0] if entry is not None and entry[0].offset == offset else None

    def put(self, upload_id: str, item: _Progress, *, budget: int) -> bool:
        """Keep ``item`` within ``budget`` bytes in all (evicting others); False if it alone exceeds it."""
        size = _footprint(item)
        with self._lock:
            old = self._items.pop(upload_id, None)
            if old is not None:
                self.nbytes -= old[1]
            if size > budget:
                return False
            self._items[upload_id] = (item, size)
            self.nbytes += size
            while self.nbytes > budget and self._items:
                _, (_, evicted) = self._items.popitem(last=False)
                self.nbytes -= evicted
        return True

    def drop(self, upload_id: str) -> None:
        with self._lock:
            entry = self._items.pop(upload_id, None)
            if entry is not None:
                self.nbytes -= entry[1]

    def __len__(self) -> int:
        return len(self._items)


_progress = _ProgressCache()


def _url(settings, upload_id: str) -> str:
    return settings.public_base_url.rstrip("/") + f"/api/uploads/{upload_id}"


def upload_public(settings, row: Upload) -> schemas.UploadPublic:
    return schemas.UploadPublic(upload_id=row.id, url=_url(settings, row.id), filename=row.filename,
                                total_bytes=row.total_bytes, received_bytes=row.received_bytes, state=row.state,
                                created_at=as_utc(row.created_at), submission_id=(row.params or {}).get("submission_id"))


def create_upload(*, session: Session, settings, member: Member, challenge: str, track: str,
                  body: schemas.UploadCreate) -> Upload:
    """Open a resumable upload session (the track's rules are checked now, and again on completion)."""
    if member.team_id is not None:
        with service.team_lock(session, settings, member.team_id):  # held until the commit below
            return _create_upload(session=session, settings=settings, member=member, challenge=challenge,
                                  track=track, body=body)
    return _create_upload(session=session, settings=settings, member=member, challenge=challenge, track=track,
                          body=body)


def _create_upload(*, session: Session, settings, member: Member, challenge: str, track: str,
                   body: schemas.UploadCreate) -> Upload:
    ticket = service.prepare_submission(session=session, member=member, challenge=challenge, track=track,
                                        reproduces=body.reproduces, label=body.label, settings=settings)
    if body.total_bytes > settings.max_upload_bytes:
        raise _too_large(settings)
    limit = settings.max_open_uploads_per_team
    pending = service.open_uploads(session, team_id=ticket.team_id, stale_after_s=settings.upload_stale_after_s)
    if limit == 0:
        raise ApiError(429, "too_many_open_uploads", "resumable uploads are turned off on this server "
                       "(max_open_uploads_per_team is 0); send the archive in one request (POST …/submissions)", limit=0)
    if len(pending) >= limit:
        ids = [u.id for u in pending]
        raise ApiError(429, "too_many_open_uploads",
                       f"your team has {len(pending)} open upload session(s) and may have at most {limit} at once "
                       f"({', '.join(ids)}); finish one (PUT the rest, then POST "
                       "/api/uploads/{id}/complete) or cancel it (DELETE /api/uploads/{id}), then open a new one",
                       open_uploads=ids, limit=limit)
    upload_id = secrets.token_hex(16)
    part = Storage(settings.storage_dir).upload_part(upload_id)
    try:
        part.touch(mode=0o640)
    except OSError as exc:
        raise storage_error(exc) from None
    filename = os.path.basename(body.filename.replace("\\", "/")) or "image.tar.gz"
    row = Upload(id=upload_id, team_id=ticket.team_id, member_id=member.id, track_id=ticket.track_id,
                 filename=filename[:255], total_bytes=body.total_bytes, received_bytes=0, state=UploadState.open,
                 params={"label": ticket.label, "reproduces": ticket.reproduces_id})
    session.add(row)
    record(session, actor=member, action="upload.create", target_type="upload", target_id=upload_id,
           track_id=ticket.track_id, total_bytes=body.total_bytes, filename=row.filename)
    session.commit()
    return row


def get_upload(*, session: Session, member: Member, upload_id: str) -> Upload:
    """The upload session if it is the member's team's; otherwise 404."""
    row = session.get(Upload, upload_id) if _UPLOAD_ID.match(upload_id) else None
    if row is None or row.team_id != member.team_id:
        raise ApiError(404, "not_found", f"upload {upload_id} does not exist or is not your team's")
    return row


def upload_status(*, session: Session, settings, member: Member, upload_id: str) -> schemas.UploadPublic:
    """Where an upload session stands: bytes received, total, state."""
    return upload_public(settings, get_upload(session=session, member=member, upload_id=upload_id))


@contextmanager
def _locked(part: Path):
    try:
        fd = os.open(part, os.O_RDWR)
    except FileNotFoundError:
        raise ApiError(409, "upload_gone", "this upload's data is gone (completed or aborted); start a new upload") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise ApiError(409, "upload_busy", "another request is writing to this upload right now; "
                               "send chunks one after another") from None
            raise
        yield
    finally:
        os.close(fd)


def _parse_range(header: str, total: int) -> tuple[int, int]:
    m = _RANGE.match(header.strip())
    if not m:
        raise ApiError(400, "bad_content_range", "send each chunk with a header 'Content-Range: bytes START-END/TOTAL' "
                       "(END inclusive)")
    start, end, whole = (int(g) for g in m.groups())
    if whole != total:
        raise ApiError(400, "bad_content_range", f"Content-Range total {whole} differs from the upload's total_bytes {total}")
    if end < start or end >= total:
        raise ApiError(400, "bad_content_range", f"Content-Range bytes {start}-{end} is not within 0-{total - 1}")
    return start, end


def _fresh(settings) -> Session:
    return get_sessionmaker(settings.database_url)()


def _abort(settings, upload_id: str, part: Path, reason: str, actor_id: int | None) -> None:
    _progress.drop(upload_id)
    Storage.remove(part)
    with _fresh(settings) as s:
        s.execute(update(Upload).where(Upload.id == upload_id).values(state=UploadState.aborted, updated_at=utcnow(),
                                                                        params=_merged(s, upload_id, reason=reason)))
        record(s, actor=s.get(Member, actor_id) if actor_id else None, action="upload.abort", target_type="upload",
               target_id=upload_id, reason=reason)
        s.commit()


def _merged(session: Session, upload_id: str, **extra) -> dict:
    row = session.get(Upload, upload_id)
    return {**((row.params if row else None) or {}), **extra}


def _read_state(settings, upload_id: str) -> tuple[UploadState, int]:
    with _fresh(settings) as s:
        state, received = s.execute(select(Upload.state, Upload.received_bytes).where(Upload.id == upload_id)).one()
        return state, received


async def put_chunk(*, request: Request, settings, member: Member, upload_id: str, content_range: str) -> schemas.UploadPublic:
    """Append one chunk at exactly ``received_bytes``; keeps what arrived if the connection drops."""
    row = await run_in_threadpool(_get_upload_fresh, settings, member, upload_id)
    if row.state != UploadState.open:
        raise ApiError(409, "upload_closed", f"upload {upload_id} is {row.state.value}; start a new upload")
    _check_content_type(request)
    start, end = _parse_range(content_range, row.total_bytes)
    length = end - start + 1
    declared = _declared_length(request)
    if declared is not None and declared != length:
        raise ApiError(400, "bad_content_range", f"Content-Length {declared} differs from the {length} bytes of Content-Range")
    part = Storage(settings.storage_dir).upload_part(upload_id)
    with _locked(part):
        state, received = await run_in_threadpool(_read_state, settings, upload_id)
        if state != UploadState.open:
            raise ApiError(409, "upload_closed", f"upload {upload_id} is {state.value}; start a new upload")
        if start != received:
            raise ApiError(416, "wrong_offset", f"this upload has {received} bytes; send the chunk starting at byte "
                           f"{received} (Content-Range: bytes {received}-…/{row.total_bytes})",
                           expected_offset=received, received_bytes=received)
        cached = _progress.take(upload_id, start)
        if cached is None and start == 0:
            cached = _Progress(0, hashlib.sha256(), _inspector(settings))
        sink = ArchiveSink(part, offset=start, hasher=cached.hasher if cached else None,
                           inspector=cached.inspector if cached else None, check=cached is not None)
        disconnected = False
        try:
            try:
                n = await pump(request.stream(), sink, limit=length, chunk_bytes=settings.upload_chunk_bytes)
            except Disconnected as exc:
                n, disconnected = exc.args[0], True
            except TooLarge:
                os.truncate(part, start)
                raise ApiError(400, "bad_content_range", f"the chunk is longer than the {length} bytes its "
                               "Content-Range announces; nothing of it was kept") from None
            except OSError as exc:
                os.truncate(part, start)
                raise storage_error(exc) from None
        finally:
            sink.close()
        if sink.archive_error is not None:
            await run_in_threadpool(_abort, settings, upload_id, part, str(sink.archive_error), member.id)
            raise _invalid(sink.archive_error)
        new_received = start + n
        await run_in_threadpool(_set_received, settings, upload_id, start, new_received)
        if cached is not None:
            _progress.put(upload_id, _Progress(new_received, sink.hasher, sink.inspector),
                          budget=settings.upload_state_cache_bytes)
        if disconnected:
            raise ApiError(400, "incomplete_upload", f"the connection closed; {new_received} bytes are kept, resume there")
    row.received_bytes = new_received
    return upload_public(settings, row)


def _get_upload_fresh(settings, member: Member, upload_id: str) -> Upload:
    with _fresh(settings) as s:
        row = get_upload(session=s, member=member, upload_id=upload_id)
        s.expunge(row)
        return row


def _set_received(settings, upload_id: str, start: int, received: int) -> None:
    with _fresh(settings) as s:
        s.execute(update(Upload).where(Upload.id == upload_id, Upload.received_bytes == start)
                  .values(received_bytes=received, updated_at=utcnow()))
        s.commit()


def _inspector(settings) -> ArchiveInspector:
    """An archive checker with this app's limits (the settings given to create_app, not the process's)."""
    return ArchiveInspector(max_uncompressed=max_uncompressed(settings), limits=ArchiveLimits.from_settings(settings))


def _rehash(path: Path, settings) -> tuple[str, ArchiveInspector]:
    hasher = hashlib.sha256()
    inspector = _inspector(settings)
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            hasher.update(block)
            inspector.feed(block)
    return hasher.hexdigest(), inspector


async def complete_upload(*, settings, member: Member, upload_id: str) -> tuple[int, str | None]:
    """Turn a fully received upload into a submission (same checks as a one-shot upload)."""
    row = await run_in_threadpool(_get_upload_fresh, settings, member, upload_id)
    if row.state != UploadState.open:
        done_sid = (row.params or {}).get("submission_id")
        extra = {"submission_id": done_sid} if done_sid else {}
        raise ApiError(409, "upload_closed", f"upload {upload_id} is already {row.state.value}"
                       + (f" (submission {done_sid})" if done_sid else ""), **extra)
    part = Storage(settings.storage_dir).upload_part(upload_id)
    with _locked(part):
        state, received = await run_in_threadpool(_read_state, settings, upload_id)
        if state != UploadState.open:
            raise ApiError(409, "upload_closed", f"upload {upload_id} is already {state.value}")
        if received != row.total_bytes:
            raise ApiError(409, "upload_incomplete", f"upload {upload_id} has {received} of {row.total_bytes} bytes; "
                           f"send the rest from byte {received}", expected_offset=received, received_bytes=received)
        cached = _progress.take(upload_id, received)
        try:
            if cached is not None:
                sha, inspector = cached.hasher.hexdigest(), cached.inspector
            else:
                sha, inspector = await run_in_threadpool(_rehash, part, settings)
            info = await run_in_threadpool(inspector.finish, read_back=part)
        except ArchiveError as exc:
            await run_in_threadpool(_abort, settings, upload_id, part, str(exc), member.id)
            raise _invalid(exc) from None
        params = row.params or {}
        ticket = service.Ticket(team_id=row.team_id, member_id=row.member_id, track_id=row.track_id,
                                reproduces_id=params.get("reproduces"), label=params.get("label", ""),
                                began_at=row.created_at)
        staged = service.Staged(path=part, sha256=sha, size=received, info=info, filename=row.filename)
        try:
            sid, note = await run_in_threadpool(lambda: service.create_submission(
                settings=settings, ticket=ticket, staged=staged, actor_id=member.id))
        except ApiError as exc:
            await run_in_threadpool(_abort, settings, upload_id, part, exc.message, member.id)
            raise
        await run_in_threadpool(_mark_complete, settings, upload_id, sid)
    return sid, note


def _mark_complete(settings, upload_id: str, submission_id: int) -> None:
    with _fresh(settings) as s:
        s.execute(update(Upload).where(Upload.id == upload_id).values(
            state=UploadState.complete, updated_at=utcnow(), params=_merged(s, upload_id, submission_id=submission_id)))
        s.commit()


def abort_upload(*, session: Session, settings, member: Member, upload_id: str) -> None:
    """Abandon an upload session and delete what it received."""
    row = get_upload(session=session, member=member, upload_id=upload_id)
    if row.state == UploadState.complete:
        raise ApiError(409, "upload_closed", f"upload {upload_id} is complete; cancel the submission instead")
    if row.state == UploadState.open:
        part = Storage(settings.storage_dir).upload_part(upload_id)
        if not part.exists():  # its bytes are already gone: only the record is left to close
            _abort(settings, upload_id, part, "deleted by the participant", member.id)
            return
        with _locked(part):
            _abort(settings, upload_id, part, "deleted by the participant", member.id)


def expire_stale_uploads(*, settings, max_age_s: int | None = None, now=None) -> int:
    """Abort open upload sessions untouched for ``max_age_s`` (default ``settings.upload_stale_after_s``) and
    delete their bytes (called by the periodic reaper); returns how many."""
    from datetime import timedelta

    max_age_s = settings.upload_stale_after_s if max_age_s is None else max_age_s
    cutoff = (now or utcnow()) - timedelta(seconds=max_age_s)
    with _fresh(settings) as s:
        stale = list(s.scalars(select(Upload.id).where(Upload.state == UploadState.open, Upload.updated_at < cutoff)))
    storage = Storage(settings.storage_dir)
    for upload_id in stale:
        _abort(settings, upload_id, storage.upload_part(upload_id), f"expired after {max_age_s} s without a chunk", None)
    return len(stale)
