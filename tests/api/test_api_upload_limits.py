"""Limits that hold before work is done: upload-session memory, open sessions and the quota, stale sessions,
the cancel loop and archive retention, the deadline at completion (issue 13)."""

from __future__ import annotations

import gc
import hashlib
import io
import tarfile
import time
import tracemalloc
from datetime import datetime, timedelta, UTC

import httpx
import pytest
from tests.api_helpers import (  # noqa: F401 (fixtures)
    app, auth, client, db_settings, finish_run, image_id_of, live, make_image_tar, seed, submit, world,
)
from sqlalchemy import select, update

from api.db import session_scope
from api.execution.reaper import reap
from api.models import Run, RunState, Submission, SubmissionState, Track, Upload
from api.submissions import uploads as uploads_mod


def _open(client, token, data: bytes, track: str = "main"):
    return client.post(f"/api/challenges/cvpr24/tracks/{track}/uploads",
                       json={"filename": "model.tar", "total_bytes": len(data)}, headers=auth(token))


def _put(client, token, uid, data: bytes, start: int, end: int):
    return client.put(f"/api/uploads/{uid}", content=data[start : end + 1],
                      headers={**auth(token), "Content-Range": f"bytes {start}-{end}/{len(data)}",
                               "Content-Type": "application/octet-stream"})


def _quota(client, world, n: int, track: str = "main") -> None:
    r = client.patch(f"/api/challenges/cvpr24/tracks/{track}", json={"quota_per_day": n}, headers=auth(world.token_org))
    assert r.status_code == 200, r.text


def _track(settings, slug: str = "main", **values) -> None:
    with session_scope(settings.database_url) as s:
        s.execute(update(Track).where(Track.slug == slug).values(**values))


def _reap(settings):
    return reap(settings, send=False)  # the trusted reaper (segarena scorer's beat); no broker message


# ---------------------------------------------------------------------------------------------
# 1. the per-session check state is bounded in memory over all sessions
# ---------------------------------------------------------------------------------------------
def _fat_archive(salt: str, mib: int) -> bytes:
    """A valid image archive that makes the checker keep ``mib`` MiB of small '.json' members."""
    def fillers(tar: tarfile.TarFile) -> None:
        for i in range(mib):
            info = tarfile.TarInfo(f"filler/{i}.json")
            info.size = 1 << 20
            tar.addfile(info, io.BytesIO(hashlib.shake_256(f"{salt}{i}".encode()).digest(1 << 20)))
    return make_image_tar(salt=salt, extra_members=fillers)


def test_upload_check_state_is_bounded_over_all_sessions(settings):
    """Six sessions that each make the checker keep 8 MiB: the cache stays within its budget (old: +48 MiB
    held until completion), and an evicted session still completes correctly (re-read from disk)."""
    from fastapi.testclient import TestClient

    from tests.api_helpers import shared_app

    settings.upload_state_cache_bytes = 12 << 20  # room for one session's 8 MiB, not two
    settings.max_open_uploads_per_team = 6
    app = shared_app(settings, migrate=True)
    world = seed(settings.database_url, quota=10)
    archives = [_fat_archive(f"fat{i}", 8) for i in range(6)]
    with TestClient(app, raise_server_exceptions=False) as c:
        uids = [_open(c, world.token_a, a).json()["upload_id"] for a in archives]
        # one warm-up chunk so that lazily created objects (engines, caches) are not counted below
        assert _put(c, world.token_a, uids[0], archives[0], 0, 99).status_code == 200
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for uid, data in zip(uids, archives):
                start = 100 if uid == uids[0] else 0
                status = _put(c, world.token_a, uid, data, start, len(data) - 1001).status_code  # all but 1000 B
                assert status == 200
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        print(f"API memory grown by 6 sessions of 8 MiB of kept members: {grown / 2**20:.1f} MiB")
        assert grown < settings.upload_state_cache_bytes + (8 << 20), f"the API kept {grown / 2**20:.1f} MiB"
        assert uploads_mod._progress.nbytes <= settings.upload_state_cache_bytes
        for uid, data in ((uids[0], archives[0]), (uids[-1], archives[-1])):  # evicted, and maybe the last kept
            assert _put(c, world.token_a, uid, data, len(data) - 1000, len(data) - 1).status_code == 200
            r = c.post(f"/api/uploads/{uid}/complete", headers=auth(world.token_a))
            assert r.status_code == 201, r.text
            assert r.json()["archive_sha256"] == hashlib.sha256(data).hexdigest()
            assert r.json()["image_id"] == image_id_of(data)
        for uid in uids[1:-1]:
            assert c.delete(f"/api/uploads/{uid}", headers=auth(world.token_a)).status_code == 204
    assert all(u not in uploads_mod._progress._items for u in uids)


# ---------------------------------------------------------------------------------------------
# 2. open sessions are bounded per team and hold quota slots; 3. the reaper expires stale ones
# ---------------------------------------------------------------------------------------------
@pytest.mark.dialects("sqlite", "postgres")  # the dialect matters here: locks, concurrency
def test_open_sessions_are_bounded_and_hold_a_quota_slot(client, world, db_settings):
    assert db_settings.max_open_uploads_per_team == 2
    _quota(client, world, 3)
    a, b, c3 = (make_image_tar(salt=f"open{i}") for i in range(3))
    ua = _open(client, world.token_a, a).json()["upload_id"]
    ub = _open(client, world.token_a2, b).json()["upload_id"]  # another member of the same team
    r = _open(client, world.token_a, c3, track="booster")  # the limit is per team, over all tracks
    assert r.status_code == 429 and r.json()["code"] == "too_many_open_uploads", r.text
    msg = r.json()["message"]
    assert "at most 2" in msg and ua in msg and ub in msg and "DELETE /api/uploads/" in msg
    assert _open(client, world.token_b, c3).status_code == 201  # team B has its own
    # two open sessions + one submission fill a quota of 3
    assert submit(client, world.token_a).status_code == 201
    r = submit(client, world.token_a)
    assert r.status_code == 429 and r.json()["code"] == "quota_exceeded", r.text
    assert "open upload session" in r.json()["message"] and "DELETE /api/uploads/" in r.json()["message"]
    # cancelling a session frees its slot
    assert client.delete(f"/api/uploads/{ua}", headers=auth(world.token_a)).status_code == 204
    assert submit(client, world.token_a).status_code == 201
    # the session being completed uses its own slot: it completes though the quota is otherwise full
    assert _put(client, world.token_a, ub, b, 0, len(b) - 1).status_code == 200
    r = client.post(f"/api/uploads/{ub}/complete", headers=auth(world.token_a))
    assert r.status_code == 201, r.text
    r = _open(client, world.token_a, c3)
    assert r.status_code == 429 and r.json()["code"] == "quota_exceeded"


def test_reaper_expires_a_stale_session_deletes_its_file_and_frees_its_slot(client, world, db_settings):
    _quota(client, world, 1)
    data = make_image_tar(salt="stale")
    uid = _open(client, world.token_a, data).json()["upload_id"]
    assert _put(client, world.token_a, uid, data, 0, 999).status_code == 200
    part = db_settings.storage_dir / "uploads" / f"{uid}.part"
    assert part.stat().st_size == 1000
    assert submit(client, world.token_a).status_code == 429  # the open session holds the only slot
    assert _reap(db_settings).uploads_expired == 0  # not stale yet
    with session_scope(db_settings.database_url) as s:
        s.get(Upload, uid).updated_at = datetime.now(UTC) - timedelta(seconds=db_settings.upload_stale_after_s + 5)
    report = _reap(db_settings)
    assert report.uploads_expired == 1
    assert not part.exists()
    assert client.get(f"/api/uploads/{uid}", headers=auth(world.token_a)).json()["state"] == "aborted"
    assert submit(client, world.token_a).status_code == 201
    assert _reap(db_settings).uploads_expired == 0


# ---------------------------------------------------------------------------------------------
# 4. upload-then-cancel is not a free loop; archives of cancelled and failed submissions expire
# ---------------------------------------------------------------------------------------------
def _cancel(client, token, sid):
    r = client.post(f"/api/submissions/{sid}/cancel", headers=auth(token))
    assert r.status_code == 200, r.text
    return r.json()


def test_upload_cancel_loop_is_refused_after_the_free_cancellations(client, world, db_settings):
    assert db_settings.max_free_cancels_per_day == 2
    _quota(client, world, 1)
    image = make_image_tar(salt="loop")  # the same image every time
    ids, codes = [], []
    for _ in range(15):
        r = submit(client, world.token_a, data=image)
        codes.append(r.status_code)
        if r.status_code != 201:
            break
        ids.append(r.json()["id"])
        sub = _cancel(client, world.token_a, ids[-1])
        assert sub["state"] == "cancelled"
    assert codes == [201, 201, 201, 429], codes
    reasons = [client.get(f"/api/submissions/{i}", headers=auth(world.token_a)).json()["reason"] for i in ids]
    assert "free cancellation" in reasons[0] and "free cancellation" in reasons[1]
    assert "counts toward the quota" in reasons[2] and "free cancellations per 24 h are used" in reasons[2]
    with session_scope(db_settings.database_url) as s:
        assert all(s.get(Submission, i).cancelled_at is not None for i in ids)
    # only three archives exist, not fifteen
    assert len(list((db_settings.storage_dir / "images").rglob("image.tar"))) == 3

    # a cancellation after the run started counts at once (team B, free cancellations unused)
    _quota(client, world, 5, track="booster")
    sid = submit(client, world.token_b, track="booster").json()["id"]
    with session_scope(db_settings.database_url) as s:
        run = s.scalar(select(Run).where(Run.submission_id == sid))
        run.state, run.started_at = RunState.loading, datetime.now(UTC)
        s.get(Submission, sid).state = SubmissionState.loading
    assert "its run had started" in _cancel(client, world.token_b, sid)["reason"]
    _quota(client, world, 1, track="booster")
    r = submit(client, world.token_b, track="booster")
    assert r.status_code == 429 and r.json()["code"] == "quota_exceeded"


def test_archives_of_cancelled_and_failed_submissions_are_deleted_after_retention(client, world, db_settings):
    _quota(client, world, 10)
    cancelled = submit(client, world.token_a).json()["id"]
    _cancel(client, world.token_a, cancelled)
    failed = submit(client, world.token_a).json()["id"]
    finish_run(db_settings.database_url, failed, state="failed", reason="every case failed")
    good = submit(client, world.token_a).json()["id"]
    finish_run(db_settings.database_url, good, state="succeeded", dsc=0.5, nsd=0.5, cases=[{"case_id": "c1"}])
    shared = submit(client, world.token_a).json()["id"]  # failed, but its file is also another's archive
    finish_run(db_settings.database_url, shared, state="failed", reason="crash")
    with session_scope(db_settings.database_url) as s:
        paths = {sid: s.get(Submission, sid).archive_path for sid in (cancelled, failed, good, shared)}
        keeper = Submission(track_id=world.tracks["main"], team_id=world.team_a, member_id=world.member_a,
                            state=SubmissionState.succeeded, archive_path=paths[shared], archive_sha256="0" * 64,
                            archive_bytes=1, image_id="sha256:" + "1" * 64, image_tag="t:1", metric_profile="default")
        s.add(keeper)
    files = {sid: db_settings.storage_dir / p for sid, p in paths.items()}
    assert all(f.exists() for f in files.values())
    assert db_settings.archive_retention_h == 24
    assert _reap(db_settings).archives_deleted == []  # within the retention
    with session_scope(db_settings.database_url) as s:
        s.get(Submission, failed).finished_at = datetime.now(UTC) - timedelta(hours=25)
    assert _reap(db_settings).archives_deleted == [failed]
    db_settings.archive_retention_h = 0  # at once
    assert _reap(db_settings).archives_deleted == [cancelled]
    assert not files[failed].exists() and not files[cancelled].exists()
    assert files[good].exists() and files[shared].exists()
    with session_scope(db_settings.database_url) as s:
        assert s.get(Submission, failed).archive_deleted_at is not None
        assert s.get(Submission, good).archive_deleted_at is None and s.get(Submission, shared).archive_deleted_at is None
    r = client.post(f"/api/admin/submissions/{failed}/rerun", headers=auth(world.token_org))
    assert r.status_code == 409 and r.json()["code"] == "archive_deleted", r.text
    assert "upload the image again" in r.json()["message"]
    assert client.post(f"/api/admin/submissions/{shared}/rerun", headers=auth(world.token_org)).status_code == 201


# ---------------------------------------------------------------------------------------------
# 5. the close time is checked again at completion, with a bounded grace
# ---------------------------------------------------------------------------------------------
def test_resumable_upload_completes_within_the_grace_and_not_after(client, world, db_settings):
    now = datetime.now(UTC)
    a, b, late = (make_image_tar(salt=f"deadline{i}") for i in range(3))
    ua = _open(client, world.token_a, a).json()["upload_id"]
    ub = _open(client, world.token_a, b).json()["upload_id"]
    for uid, data in ((ua, a), (ub, b)):
        assert _put(client, world.token_a, uid, data, 0, len(data) - 1).status_code == 200
    # the session was opened two minutes ago, the track closed a minute ago; within the grace of 900 s
    with session_scope(db_settings.database_url) as s:
        s.get(Upload, ua).created_at = now - timedelta(seconds=120)
    _track(db_settings, closes_at=now - timedelta(seconds=60), upload_grace_s=900)
    r = client.post(f"/api/uploads/{ua}/complete", headers=auth(world.token_a))
    assert r.status_code == 201, r.text
    # the track closed 1000 s ago (the session was opened 2000 s ago): past the grace, refused
    with session_scope(db_settings.database_url) as s:
        s.get(Upload, ub).created_at = now - timedelta(seconds=2000)
    _track(db_settings, closes_at=now - timedelta(seconds=1000), upload_grace_s=900)
    r = client.post(f"/api/uploads/{ub}/complete", headers=auth(world.token_a))
    assert r.status_code == 403 and r.json()["code"] == "track_closed", r.text
    assert "grace" in r.json()["message"] and "not accepted" in r.json()["message"]
    with session_scope(db_settings.database_url) as s:
        assert s.scalar(select(Submission.id).where(Submission.image_id == image_id_of(b))) is None
    assert client.get(f"/api/uploads/{ub}", headers=auth(world.token_a)).json()["state"] == "aborted"
    assert not (db_settings.storage_dir / "uploads" / f"{ub}.part").exists()
    assert _open(client, world.token_a, late).status_code == 403  # no new session after the close


@pytest.mark.parametrize("grace,expected", [(0, 403), (900, 201)])
def test_one_shot_upload_that_crosses_the_close_time(live, world, db_settings, grace, expected):
    """The track closes while the body streams: accepted within the grace, refused without one."""
    data = make_image_tar(salt=f"crossing{grace}", layer_bytes=200_000)

    def body():
        yield data[:1000]
        # the request was accepted and the body is streaming: now the track closes, 0.1 s ago. The server took
        # the upload's start time when the headers came; a loaded machine may take a second or more for that (a
        # start after the close is an upload begun too late, refused without grace): 2 s of room
        time.sleep(2.0)
        _track(db_settings, closes_at=datetime.now(UTC) - timedelta(seconds=0.1), upload_grace_s=grace)
        yield data[1000:]

    with httpx.Client(base_url=live.url, timeout=30) as http:
        r = http.post("/api/challenges/cvpr24/tracks/main/submissions", content=body(),
                      headers={**auth(world.token_a), "Content-Type": "application/x-tar"})
    assert r.status_code == expected, r.text
    if expected == 403:
        assert r.json()["code"] == "track_closed" and "0 s of grace" in r.json()["message"]
        assert list((db_settings.storage_dir / "images").glob("*")) == []
