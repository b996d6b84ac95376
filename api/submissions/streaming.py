"""Streams a request body to a file in chunks: bounded memory, SHA-256 and archive checks in the same pass.

The event loop receives the body; every ``chunk_bytes`` are handed to a thread that hashes, inspects
and writes them (hashlib and zlib release the GIL), while the loop already receives the next chunk.
At most two chunks are in memory at any time, whatever the size of the upload.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.requests import ClientDisconnect

from api.errors import ApiError
from api.submissions.archive import ArchiveError, ArchiveInspector

__all__ = ["ArchiveSink", "pump", "TooLarge", "Disconnected"]


class TooLarge(Exception):
    """More bytes arrived than allowed."""


class Disconnected(Exception):
    """The client went away before the body was complete."""


class ArchiveSink:
    """A file being written at ``offset`` plus the running SHA-256 and archive inspection of all bytes so far."""

    def __init__(self, path: Path, *, offset: int = 0, hasher=None, inspector: ArchiveInspector | None = None,
                 max_uncompressed: int | None = None, check: bool = True) -> None:
        """With ``check=False`` the bytes are only written (hash and inspection are redone at the end)."""
        self.path = Path(path)
        self.check = check
        self.hasher = hasher if hasher is not None else hashlib.sha256()
        self.inspector = inspector if inspector is not None else ArchiveInspector(max_uncompressed=max_uncompressed)
        self.archive_error: ArchiveError | None = None
        flags = os.O_WRONLY | os.O_CREAT
        self._fd = os.open(self.path, flags, 0o640)
        os.ftruncate(self._fd, offset)
        os.lseek(self._fd, offset, os.SEEK_SET)
        self.offset = offset

    def write(self, data: bytes | bytearray | list[bytes]) -> None:
        """Hash, inspect and append ``data`` (runs in a worker thread); after an archive error, discard."""
        pieces = data if isinstance(data, list) else [data]
        size = sum(len(p) for p in pieces)
        if self.archive_error is not None:
            self.offset += size
            return
        if self.check:
            try:
                for piece in pieces:
                    self.hasher.update(piece)
                    self.inspector.feed(piece)
            except ArchiveError as exc:
                self.archive_error = exc
                os.ftruncate(self._fd, 0)
                self.offset += size
                return
        _writev_all(self._fd, pieces)
        self.offset += size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _writev_all(fd: int, pieces: list) -> None:
    """Write all ``pieces`` (one system call per 512 of them, retried on short writes)."""
    views = [memoryview(p) for p in pieces if len(p)]
    while views:
        batch = views[:512]
        written = os.writev(fd, batch)
        while written and views:
            if written >= len(views[0]):
                written -= len(views.pop(0))
            else:
                views[0] = views[0][written:]
                written = 0


async def pump(stream: AsyncIterator[bytes], sink: ArchiveSink, *, limit: int, chunk_bytes: int,
               stop_on_archive_error: bool = False) -> int:
    """Copy ``stream`` into ``sink``; returns the bytes received. Raises TooLarge, Disconnected or ApiError."""
    loop = asyncio.get_running_loop()
    received = 0
    pending: asyncio.Future | None = None
    batch: list[bytes] = []  # the chunks as received: no copy into a bigger buffer
    batched = 0

    async def flush(data: list[bytes]) -> None:
        nonlocal pending
        if pending is not None:
            await pending
            pending = None
            if stop_on_archive_error and sink.archive_error is not None:
                raise sink.archive_error
        if data:
            pending = loop.run_in_executor(None, sink.write, data)

    try:
        try:
            async for chunk in stream:
                if not chunk:
                    continue
                received += len(chunk)
                if received > limit:
                    raise TooLarge(received)
                batch.append(chunk)
                batched += len(chunk)
                if batched >= chunk_bytes:
                    data, batch, batched = batch, [], 0
                    await flush(data)
        except ClientDisconnect:
            await flush(batch)  # keep what did arrive (a resumable upload continues from there)
            await flush([])
            raise Disconnected(received) from None
        await flush(batch)
        await flush([])
    except BaseException:
        if pending is not None:
            try:
                await pending
            except Exception:
                pass
        raise
    return received


def storage_error(exc: OSError) -> ApiError:
    return ApiError(507, "storage_full",
                    f"the server could not store the upload ({exc.strerror}); try again later or tell the organizers")
