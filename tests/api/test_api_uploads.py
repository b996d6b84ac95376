"""Resumable uploads: Content-Range chunks, offsets, dropped connections, re-hash after a restart, cleanup."""

from __future__ import annotations

import itertools
import pytest
import fcntl
import hashlib
import os
import socket
import time

import httpx
from tests.api_helpers import (  # noqa: F401 (fixtures)
    app, auth, client, db_settings, image_id_of, live, make_image_tar, world,
)
from tests.waiting import wait_until
from sqlalchemy import func, select

from api.db import session_scope
from api.models import Submission
from api.submissions import uploads as uploads_mod
from datetime import UTC


def _open(client, token, data: bytes, track: str = "main", **extra):
    return client.post(f"/api/challenges/cvpr24/tracks/{track}/uploads",
                       json={"filename": "model.tar.gz", "total_bytes": len(data), **extra}, headers=auth(token))


def _put(client, token, uid, data: bytes, start: int, end: int, total: int | None = None):
    total = len(data) if total is None else total
    return client.put(f"/api/uploads/{uid}", content=data[start : end + 1],
                      headers={**auth(token), "Content-Range": f"bytes {start}-{end}/{total}",
                               "Content-Type": "application/octet-stream"})


def _files(settings) -> list[str]:
    """Files in storage, but the test set the trusted side materializes when it splits a run into shards."""
    root = settings.storage_dir
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "testsets")


def test_chunked_upload_with_wrong_offsets(client, world, db_settings):
    data = make_image_tar(gzip=True, layer_bytes=300_000, salt="chunks")
    r = _open(client, world.token_a, data, label="resumed")
    assert r.status_code == 201, r.text
    up = r.json()
    uid = up["upload_id"]
    assert up["received_bytes"] == 0 and up["state"] == "open" and up["url"].endswith(f"/api/uploads/{uid}")
    cut = [0, 1000, 1001, 100_000, len(data)]
    for a, b in itertools.pairwise(cut):
        r = _put(client, world.token_a, uid, data, a, b - 1)
        assert r.status_code == 200, r.text
        assert r.json()["received_bytes"] == b
        # the same chunk again (a client that did not see the answer): 416 with the offset to use
        if b < len(data):
            again = _put(client, world.token_a, uid, data, a, b - 1)
            assert again.status_code == 416 and again.json()["expected_offset"] == b
    assert client.get(f"/api/uploads/{uid}", headers=auth(world.token_a)).json()["received_bytes"] == len(data)
    r = client.post(f"/api/uploads/{uid}/complete", headers=auth(world.token_a))
    assert r.status_code == 201, r.text
    sub = r.json()
    assert sub["archive_sha256"] == hashlib.sha256(data).hexdigest() and sub["image_id"] == image_id_of(data)
    assert sub["label"] == "resumed" and sub["state"] == "queued"
    assert _files(db_settings) == [f"images/{sub['id']}/image.tar.gz"]
    status = client.get(f"/api/uploads/{uid}", headers=auth(world.token_a)).json()
    assert status["state"] == "complete" and status["submission_id"] == sub["id"]
    r = client.post(f"/api/uploads/{uid}/complete", headers=auth(world.token_a))
    assert r.status_code == 409 and r.json()["submission_id"] == sub["id"]
    assert _put(client, world.token_a, uid, data, 0, 9).status_code == 409
    assert client.delete(f"/api/uploads/{uid}", headers=auth(world.token_a)).status_code == 409


def test_rehash_when_chunks_came_through_another_process(client, world, db_settings):
    """The in-process hash state is gone (restart, another API process): complete re-reads the file once."""
    data = make_image_tar(layer_bytes=200_000, salt="rehash")
    uid = _open(client, world.token_a, data).json()["upload_id"]
    assert _put(client, world.token_a, uid, data, 0, 49_999).status_code == 200
    uploads_mod._progress.drop(uid)
    assert _put(client, world.token_a, uid, data, 50_000, len(data) - 1).status_code == 200
    r = client.post(f"/api/uploads/{uid}/complete", headers=auth(world.token_a))
    assert r.status_code == 201, r.text
    assert r.json()["archive_sha256"] == hashlib.sha256(data).hexdigest() and r.json()["image_id"] == image_id_of(data)


def test_bad_ranges_and_bodies(client, world, db_settings):
    data = make_image_tar(salt="ranges")
    uid = _open(client, world.token_a, data).json()["upload_id"]
    h = {**auth(world.token_a), "Content-Type": "application/octet-stream"}
    n = len(data)
    for header in ("bytes=0-9/100", "bytes 0-9", f"bytes 9-0/{n}", f"bytes 0-{n}/{n}", f"items 0-9/{n}",
                   f"bytes -1-9/{n}"):
        r = client.put(f"/api/uploads/{uid}", content=b"x" * 10, headers={**h, "Content-Range": header})
        assert r.status_code == 400 and r.json()["code"] == "bad_content_range", header
    r = client.put(f"/api/uploads/{uid}", content=data[:10], headers={**h, "Content-Range": "bytes 0-9/12345"})
    assert r.status_code == 400 and "total_bytes" in r.json()["message"]
    r = client.put(f"/api/uploads/{uid}", content=data[:10], headers=h)
    assert r.status_code == 422  # Content-Range is required
    # a body longer than its range: refused, nothing kept
    r = client.put(f"/api/uploads/{uid}", content=(x for x in [data[:20]]),
                   headers={**h, "Content-Range": f"bytes 0-9/{len(data)}"})
    assert r.status_code == 400 and "longer" in r.json()["message"]
    assert client.get(f"/api/uploads/{uid}", headers=auth(world.token_a)).json()["received_bytes"] == 0
    # complete before all bytes arrived
    _put(client, world.token_a, uid, data, 0, 99)
    r = client.post(f"/api/uploads/{uid}/complete", headers=auth(world.token_a))
    assert r.status_code == 409 and r.json()["code"] == "upload_incomplete" and r.json()["expected_offset"] == 100
    # another team cannot see or touch it
    for method, path in (("GET", ""), ("POST", "/complete"), ("DELETE", "")):
        assert client.request(method, f"/api/uploads/{uid}{path}", headers=auth(world.token_b)).status_code == 404
    assert _put(client, world.token_b, uid, data, 100, 199).status_code == 404
    assert client.get("/api/uploads/not-an-id", headers=auth(world.token_a)).status_code == 404
    # abandon: 204, and the bytes are gone
    assert client.delete(f"/api/uploads/{uid}", headers=auth(world.token_a)).status_code == 204
    assert client.get(f"/api/uploads/{uid}", headers=auth(world.token_a)).json()["state"] == "aborted"
    assert _files(db_settings) == []


def test_session_rules(client, world, db_settings):
    data = make_image_tar(salt="rules")
    r = _open(client, world.token_a, data, track="closed")
    assert r.status_code == 403 and r.json()["code"] == "track_closed"
    r = _open(client, world.token_a, data, track="repro")
    assert r.status_code == 422 and r.json()["code"] == "reproduces_required"
    db_settings.max_upload_bytes = 1000
    r = client.post("/api/challenges/cvpr24/tracks/main/uploads", json={"total_bytes": 1001}, headers=auth(world.token_a))
    assert r.status_code == 413
    for body in ({}, {"total_bytes": 0}, {"total_bytes": -5}, {"total_bytes": 10, "surprise": 1}):
        assert client.post("/api/challenges/cvpr24/tracks/main/uploads", json=body,
                           headers=auth(world.token_a)).status_code == 422
    assert client.post("/api/challenges/cvpr24/tracks/main/uploads", json={"total_bytes": 10},
                       headers=auth(world.token_org)).status_code == 403
    client.patch("/api/challenges/cvpr24/tracks/main", json={"quota_per_day": 0}, headers=auth(world.token_org))
    r = client.post("/api/challenges/cvpr24/tracks/main/uploads", json={"total_bytes": 10}, headers=auth(world.token_a))
    assert r.status_code == 429
    assert _files(db_settings) == []


def test_invalid_archive_is_refused_at_the_first_chunk(client, world, db_settings):
    data = b"this is not a tar archive at all " * 100
    uid = _open(client, world.token_a, data).json()["upload_id"]
    r = _put(client, world.token_a, uid, data, 0, 1023)
    assert r.status_code == 422 and r.json()["code"] == "invalid_archive"
    assert client.get(f"/api/uploads/{uid}", headers=auth(world.token_a)).json()["state"] == "aborted"
    assert _files(db_settings) == []


def test_invalid_archive_found_on_complete_leaves_nothing(client, world, db_settings):
    data = make_image_tar(arch="arm64", salt="arm")
    uid = _open(client, world.token_a, data).json()["upload_id"]
    assert _put(client, world.token_a, uid, data, 0, len(data) - 1).status_code == 200
    r = client.post(f"/api/uploads/{uid}/complete", headers=auth(world.token_a))
    assert r.status_code == 422 and "amd64" in r.json()["message"]
    assert _files(db_settings) == []
    with session_scope(db_settings.database_url) as s:
        assert s.scalar(select(func.count()).select_from(Submission)) == 0


@pytest.mark.dialects("sqlite", "postgres")  # the dialect matters here: locks, concurrency
def test_concurrent_writes_to_one_session_are_refused(client, world, db_settings):
    data = make_image_tar(salt="busy")
    uid = _open(client, world.token_a, data).json()["upload_id"]
    part = db_settings.storage_dir / "uploads" / f"{uid}.part"
    fd = os.open(part, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another request is writing
        r = _put(client, world.token_a, uid, data, 0, 99)
        assert r.status_code == 409 and r.json()["code"] == "upload_busy"
    finally:
        os.close(fd)
    assert _put(client, world.token_a, uid, data, 0, 99).status_code == 200


def test_dropped_connection_keeps_what_arrived(live, world, db_settings):
    """Over a real socket: a chunk cut off mid-way keeps its received bytes; the upload resumes from there."""
    data = make_image_tar(gzip=False, layer_bytes=400_000, salt="drop")
    with httpx.Client(base_url=live.url, timeout=30) as http:
        uid = _open(http, world.token_a, data).json()["upload_id"]
        sent = 150_000
        head = (f"PUT /api/uploads/{uid} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {world.token_a}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Range: bytes 0-{len(data) - 1}/{len(data)}\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", live.port)) as sock:
            sock.sendall(head + data[:sent])
            time.sleep(0.3)  # the point: the partial body is in flight when the connection drops
        got = wait_until(lambda: http.get(f"/api/uploads/{uid}", headers=auth(world.token_a)).json()["received_bytes"],
                         10, "the server to keep the bytes of the cut-off chunk")
        assert got == sent
        r = _put(http, world.token_a, uid, data, got, len(data) - 1)
        assert r.status_code == 200, r.text
        r = http.post(f"/api/uploads/{uid}/complete", headers=auth(world.token_a))
        assert r.status_code == 201, r.text
        assert r.json()["archive_sha256"] == hashlib.sha256(data).hexdigest()
        assert r.json()["image_id"] == image_id_of(data)


def test_stale_upload_sessions_expire(client, world, db_settings):
    from datetime import datetime, timedelta

    from api.models import Upload

    data = make_image_tar(salt="stale")
    old = _open(client, world.token_a, data).json()["upload_id"]
    fresh = _open(client, world.token_a, data).json()["upload_id"]
    _put(client, world.token_a, old, data, 0, 99)
    with session_scope(db_settings.database_url) as s:
        s.get(Upload, old).updated_at = datetime.now(UTC) - timedelta(days=8)
    assert uploads_mod.expire_stale_uploads(settings=db_settings) == 1
    assert client.get(f"/api/uploads/{old}", headers=auth(world.token_a)).json()["state"] == "aborted"
    assert client.get(f"/api/uploads/{fresh}", headers=auth(world.token_a)).json()["state"] == "open"
    assert _files(db_settings) == [f"uploads/{fresh}.part"]
