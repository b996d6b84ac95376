"""Resumable upload of an image archive through the uploads-session API.

``POST /api/challenges/{c}/tracks/{t}/uploads`` opens a session, ``PUT /api/uploads/{id}`` with
``Content-Range: bytes START-END/TOTAL`` sends a chunk, ``GET /api/uploads/{id}`` says how much the
server holds, ``POST /api/uploads/{id}/complete`` turns it into a submission. The session id is kept in
a small state file (``~/.cache/segarena/uploads.json``), so running the same ``segarena submit`` again
after a dropped connection or Ctrl-C continues where the server stopped.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segarena.client import CliError, SegArenaClient, cache_dir, error_from_response

__all__ = ["upload_archive", "UploadState", "DEFAULT_CHUNK_BYTES"]

DEFAULT_CHUNK_BYTES = 16 * 1024**2
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
# API codes after which the client asks the server for its offset and goes on
RESYNC_CODES = {"wrong_offset", "incomplete_upload", "upload_busy"}


class UploadState:
    """The state file: one open upload session per (server, track, archive, size, mtime)."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_dir() / "uploads.json"

    @staticmethod
    def key(url: str, track_path: str, archive: Path, label: str, reproduces: int | None) -> str:
        st = archive.stat()
        return json.dumps([url, track_path, str(archive.resolve()), st.st_size, int(st.st_mtime), label, reproduces])

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path)

    def get(self, key: str) -> str | None:
        return self._load().get(key)

    def put(self, key: str, upload_id: str) -> None:
        data = self._load()
        data[key] = upload_id
        self._save(data)

    def drop(self, key: str) -> None:
        data = self._load()
        if data.pop(key, None) is not None:
            self._save(data)


def _received(client: SegArenaClient, upload_id: str) -> dict[str, Any] | None:
    """The server's view of a session, or None when it no longer exists or cannot be resumed."""
    try:
        info = client.get(f"/api/uploads/{upload_id}")
    except CliError as exc:
        if exc.status in {404, 410, 403}:
            return None
        raise
    return info if isinstance(info, dict) else None


def upload_archive(
    client: SegArenaClient,
    archive: Path,
    *,
    track: str,
    challenge: str | None = None,
    label: str = "",
    reproduces: int | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    max_retries: int = 8,
    state: UploadState | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_event: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Upload ``archive`` to ``track`` resumably and return the new submission (the API's JSON)."""
    archive = Path(archive)
    if not archive.is_file():
        raise CliError(f"{archive}: no such file; give the path of your 'docker save' archive (.tar.gz or .tar)")
    total = archive.stat().st_size
    if total == 0:
        raise CliError(f"{archive} is empty; create it with: docker save IMAGE | gzip > {archive.name}")
    state = state or UploadState()
    track_path = client.track_path(track, challenge)
    key = UploadState.key(client.config.url, track_path, archive, label, reproduces)
    say = on_event or (lambda _m: None)
    progress = on_progress or (lambda _done, _total: None)

    upload_id, offset = _open_upload(client, state, key, track_path, archive, total, label, reproduces, say)
    progress(offset, total)

    failures = 0
    with archive.open("rb") as fh:
        while offset < total:
            fh.seek(offset)
            chunk = fh.read(min(chunk_bytes, total - offset))
            got, error = _send_chunk(client, state, key, upload_id, chunk, offset, total)
            if got is not None:
                failures, offset = 0, got
                progress(offset, total)
                continue
            # connection dropped, server busy or out of sync: ask the server where it stands, then go on
            failures += 1
            if failures > max_retries:
                raise CliError(f"upload interrupted ({error}) {max_retries} times in a row; run the same "
                               "'segarena submit' command again to resume where it stopped")
            delay = min(2 ** (failures - 1), 30) * 0.5
            say(f"connection problem ({error}); retrying in {delay:.1f}s from the server's offset")
            sleep(delay)
            try:
                info = _received(client, upload_id)
            except CliError:
                continue  # server unreachable: keep the offset, back off, retry
            if info is None:
                state.drop(key)
                raise CliError(f"the server no longer knows upload {upload_id}; run 'segarena submit' again to start over")
            offset = int(info.get("received_bytes", offset))
            progress(offset, total)

    submission = _complete(client, state, key, upload_id, max_retries, sleep)
    state.drop(key)
    return submission


def _open_upload(client: SegArenaClient, state: UploadState, key: str, track_path: str, archive: Path, total: int,
                 label: str, reproduces: int | None, say: Callable[[str], None]) -> tuple[str, int]:
    """The upload to send to and where to start: the one this command left open before (resumed at the server's
    offset) or a new one."""
    upload_id = state.get(key)
    if upload_id:
        info = _received(client, upload_id)
        if info and info.get("state", "open") == "open" and int(info.get("total_bytes", total)) == total:
            offset = int(info.get("received_bytes", 0))
            say(f"resuming upload {upload_id} at {offset / 2**20:.1f} of {total / 2**20:.1f} MiB")
            return upload_id, offset
        state.drop(key)
    body: dict[str, Any] = {"filename": archive.name, "total_bytes": total, "label": label}
    if reproduces is not None:
        body["reproduces"] = reproduces
    created = client.post(f"{track_path}/uploads", json=body)
    upload_id = str(created["upload_id"])
    state.put(key, upload_id)
    return upload_id, int(created.get("received_bytes", 0))


def _send_chunk(client: SegArenaClient, state: UploadState, key: str, upload_id: str, chunk: bytes, offset: int,
                total: int) -> tuple[int | None, str | None]:
    """PUT one chunk: ``(the server's new offset, None)``, or ``(None, what went wrong)`` when it is worth retrying
    from the server's offset; raises the API's error when it is not."""
    import httpx  # here, not at import: `segarena --help` stays fast

    end = offset + len(chunk) - 1
    try:
        resp = client.http.put(f"/api/uploads/{upload_id}", content=chunk,
                               headers={"Content-Range": f"bytes {offset}-{end}/{total}",
                                        "Content-Type": "application/octet-stream"})
    except httpx.TransportError as exc:
        return None, f"{exc.__class__.__name__}: {exc}"
    if resp.status_code >= 400:
        problem = error_from_response(resp)
        if resp.status_code not in RETRYABLE_STATUS and problem.api_code not in RESYNC_CODES \
                and resp.status_code != 416:
            if problem.api_code in {"upload_gone", "upload_closed", "not_found"}:
                state.drop(key)
            raise problem
        return None, problem.message
    try:
        return int(resp.json().get("received_bytes", end + 1)), None
    except (ValueError, AttributeError, TypeError):
        return end + 1, None


def _complete(client: SegArenaClient, state: UploadState, key: str, upload_id: str, max_retries: int,
              sleep: Callable[[float], None]) -> dict[str, Any]:
    """Close the upload and return the submission it created (also when an earlier answer was lost)."""
    for attempt in range(max_retries + 1):
        try:
            return client.post(f"/api/uploads/{upload_id}/complete")
        except CliError as exc:
            sid = exc.body.get("submission_id")
            if exc.api_code == "upload_closed" and sid:
                # an earlier 'complete' went through but its answer was lost: that is our submission
                return client.get(f"/api/submissions/{sid}")
            if (exc.status is not None and exc.status not in RETRYABLE_STATUS) or attempt == max_retries:
                if exc.status is not None and exc.status < 500:
                    state.drop(key)  # the server refused it for good (quota, bad archive): start over next time
                raise
            sleep(min(2 ** attempt, 30) * 0.5)
    raise AssertionError("unreachable: the last attempt returns or raises")
