"""Sharded execution on both storage backends: the local directory and S3-compatible object storage (a moto
server on 127.0.0.1, tests/s3_helpers.py). Through the real worker routes over HTTP (the tests play the execution
host) and the real trusted scorer function:

- a full 27-case run with perfect outputs uploaded by two workers ends with DSC = NSD = 1; the outputs are objects
  ``runs/<run>/<case>/output-<random>.npz`` while unscored and are deleted once scored; nothing is left in this
  host's scratch; with S3 nothing of the run is on the host at all;
- the image archive is streamed from the backend with the right sha256 (and Content-Length);
- a cancelled submission re-run on S3 gets its archive from S3; after the retention the archive object is deleted,
  a re-run is refused (409) and the image route answers 410 (also when the object is lost).

The per-case trusted-side overhead (upload route + score_case, median ms) is printed (``-s``)."""

from __future__ import annotations

import hashlib
import statistics
import time

import pytest
import tests.execution.test_execution_api as ex
from tests.api_helpers import app, auth, client  # noqa: F401 (fixtures)
from tests.s3_helpers import s3_server, s3_settings  # noqa: F401 (fixtures)
from sqlalchemy import select

from api.db import session_scope
from api.models import CaseResult, CaseStatus, Run, RunState, Shard, ShardState, Submission, SubmissionState, utcnow
from api.storage import S3Storage, Storage


@pytest.fixture(params=["local", "s3"])
def db_settings(request, settings):
    """The embedded settings (SQLite) with the local storage directory, and again with S3 storage."""
    if request.param == "s3":
        return request.getfixturevalue("s3_settings")
    return settings


def _host_files(settings, sub: str) -> list:
    root = settings.storage_dir / sub
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_full_run_on_either_backend_scores_perfect_outputs_and_deletes_them(db_settings, client):
    from api.execution.scoring import score_case

    store = Storage.from_settings(db_settings)
    s3 = isinstance(store, S3Storage)
    assert s3 == (db_settings.storage_url != "")
    w = ex._world(client, db_settings, shard_size=14)  # 2 shards (14 + 13 cases)
    sub = ex._submit(client, w.token_a)
    run_id = ex._run_of(db_settings, sub)
    with session_scope(db_settings.database_url) as s:
        sha, key = s.get(Submission, sub).archive_sha256, s.get(Submission, sub).archive_path
    assert store.exists(key) and (not s3 or _host_files(db_settings, "images") == [])  # S3: the archive is an object only
    specs = [ex._claim(client, w.wt1).json(), ex._claim(client, w.wt2, "w2").json()]
    assert sum(len(sp["cases"]) for sp in specs) == 27
    # the image archive, streamed from the backend with its digest
    img = client.get(specs[0]["image"]["url"], headers=auth(w.wt1))
    assert img.status_code == 200, img.text
    assert img.headers["x-content-sha256"] == sha == hashlib.sha256(img.content).hexdigest()
    assert int(img.headers["content-length"]) == len(img.content) == store.size(key)
    # a case input: from the trusted host's test set with either backend
    case0 = specs[0]["cases"][0]
    got = client.get(case0["url"], params={"lease": specs[0]["lease"]}, headers=auth(w.wt1))
    assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == case0["sha256"]
    upload_ms, ids = [], []
    for spec, token in zip(specs, (w.wt1, w.wt2)):
        for case in spec["cases"]:
            body = ex._npz(ex._gt(db_settings, case["id"]))
            t0 = time.perf_counter()
            r = ex._upload(client, token, spec, case["id"], output=body)
            upload_ms.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200 and r.json()["duplicate"] is False, r.text
            ids.append(r.json()["case_result_id"])
    # every output is one object under runs/<run>/<case>/; a repeated upload adds none
    again = ex._perfect(client, w.wt1, db_settings, specs[0], case0["id"])
    assert again.status_code == 200 and again.json()["duplicate"] is True
    objects = sorted(store.keys(f"runs/{run_id}/"))
    with session_scope(db_settings.database_url) as s:
        rows = s.scalars(select(CaseResult).where(CaseResult.run_id == run_id)).all()
        assert len(rows) == 27 and not any(r.scored for r in rows)
        assert sorted(r.output_key for r in rows) == objects
        assert all(r.output_key.startswith(f"runs/{run_id}/{r.case_id}/output-") for r in rows)
    assert _host_files(db_settings, "scratch") == []  # the staged uploads are gone
    if s3:
        assert _host_files(db_settings, "runs") == []  # with S3, the outputs are never files of this host
    for spec, token in zip(specs, (w.wt1, w.wt2)):
        r = client.post(f"/api/worker/shards/{spec['shard_id']}/finish",
                        json={"lease": spec["lease"], "outcome": "done"}, headers=auth(token))
        assert r.status_code == 200, r.text
    score_ms = []
    for cid in ids:
        t0 = time.perf_counter()
        assert score_case(db_settings, cid) == "ok"
        score_ms.append((time.perf_counter() - t0) * 1000)
    with session_scope(db_settings.database_url) as s:
        rows = s.scalars(select(CaseResult).where(CaseResult.run_id == run_id)).all()
        assert all(r.status == CaseStatus.ok and r.dsc == 1.0 and r.nsd == 1.0 and r.scored for r in rows)
        run, sub_row = s.get(Run, run_id), s.get(Submission, sub)
        assert run.state == RunState.succeeded and run.reason == ""
        assert sub_row.state == SubmissionState.succeeded and sub_row.dsc == 1.0 and sub_row.nsd == 1.0
    # scored outputs are deleted from the backend, nothing is left in scratch
    assert list(store.keys(f"runs/{run_id}/")) == []
    assert _host_files(db_settings, "scratch") == [] and _host_files(db_settings, "runs") == []
    print(f"\n[{store.kind}] per case: upload route median {statistics.median(upload_ms):.1f} ms, "
          f"score_case median {statistics.median(score_ms):.1f} ms, total "
          f"{statistics.median(upload_ms) + statistics.median(score_ms):.1f} ms (27 cases)")


def test_keep_case_outputs_leaves_the_objects(db_settings, client):
    from api.execution.scoring import score_case

    db_settings.keep_case_outputs = True
    store = Storage.from_settings(db_settings)
    w = ex._world(client, db_settings, shard_size=27)
    run_id = ex._run_of(db_settings, ex._submit(client, w.token_a))
    spec = ex._claim(client, w.wt1).json()
    case = spec["cases"][0]
    r = ex._perfect(client, w.wt1, db_settings, spec, case["id"])
    assert r.status_code == 200, r.text
    assert score_case(db_settings, r.json()["case_result_id"]) == "ok"
    with session_scope(db_settings.database_url) as s:
        key = s.get(CaseResult, r.json()["case_result_id"]).output_key
    assert list(store.keys(f"runs/{run_id}/")) == [key]
    # a lost output (deleted behind the scorer's back) is recorded as no output, not an error
    other = spec["cases"][1]
    r2 = ex._perfect(client, w.wt1, db_settings, spec, other["id"])
    with session_scope(db_settings.database_url) as s:
        lost = s.get(CaseResult, r2.json()["case_result_id"]).output_key
    store.delete(lost)
    assert score_case(db_settings, r2.json()["case_result_id"]) == "no_output"


def test_rerun_and_retention_on_either_backend(db_settings, client):
    from api.submissions.service import delete_expired_archives

    store = Storage.from_settings(db_settings)
    w = ex._world(client, db_settings, shard_size=27)
    sub = ex._submit(client, w.token_a)
    with session_scope(db_settings.database_url) as s:
        sha, key = s.get(Submission, sub).archive_sha256, s.get(Submission, sub).archive_path
    assert client.post(f"/api/submissions/{sub}/cancel", headers=auth(w.token_a)).status_code == 200
    # a re-run of the cancelled submission: its new shard gets the archive from the backend
    r = client.post(f"/api/admin/submissions/{sub}/rerun", headers=auth(w.token_org))
    assert r.status_code == 201, r.text
    spec = ex._claim(client, w.wt1).json()
    assert spec["attempt"] == 2 and spec["submission_id"] == sub
    img = client.get(spec["image"]["url"], headers=auth(w.wt1))
    assert img.status_code == 200 and hashlib.sha256(img.content).hexdigest() == sha
    # the object lost from storage: 410
    saved = b"".join(store.iter_bytes(key))
    store.delete(key)
    lost = client.get(spec["image"]["url"], headers=auth(w.wt1))
    assert lost.status_code == 410 and lost.json()["code"] == "gone", lost.text
    store.put_stream(key, [saved])
    assert client.post(f"/api/submissions/{sub}/cancel", headers=auth(w.token_a)).status_code == 200
    # within the retention the archive stays; after it, the object is deleted and a re-run is refused
    assert delete_expired_archives(settings=db_settings) == [] and store.exists(key)
    db_settings.archive_retention_h = 0
    assert delete_expired_archives(settings=db_settings) == [sub]
    assert not store.exists(key)
    with session_scope(db_settings.database_url) as s:
        assert s.get(Submission, sub).archive_deleted_at is not None
    r = client.post(f"/api/admin/submissions/{sub}/rerun", headers=auth(w.token_org))
    assert r.status_code == 409 and r.json()["code"] == "archive_deleted", r.text
    # a worker still holding a shard of it (a stale claim) gets 410 for the image
    with session_scope(db_settings.database_url) as s:
        shard = s.get(Shard, spec["shard_id"])
        shard.state, shard.finished_at = ShardState.running, None
        shard.heartbeat_at = utcnow()
    gone = client.get(spec["image"]["url"], headers=auth(w.wt1))
    assert gone.status_code == 410 and "no longer in storage" in gone.json()["message"], gone.text


@pytest.mark.parametrize("db_settings", ["s3"], indirect=True)
def test_object_storage_failing_is_retryable_and_loses_nothing(db_settings, client):
    """S3 answering errors (here: a bucket that does not exist): the upload answers 503 (the worker retries) and
    records nothing; scoring raises (the row stays unscored for the reaper to re-send) and succeeds later."""
    from api.execution.scoring import score_case
    from api.storage import StorageError

    settings = db_settings
    good_url = settings.storage_url
    w = ex._world(client, settings, shard_size=27)
    run_id = ex._run_of(settings, ex._submit(client, w.token_a))
    spec = ex._claim(client, w.wt1).json()
    case = spec["cases"][0]
    settings.storage_url = "s3://segarena-no-such-bucket/segarena"
    r = ex._perfect(client, w.wt1, settings, spec, case["id"])
    assert r.status_code == 503 and r.json()["code"] == "storage_unavailable", r.text
    with session_scope(settings.database_url) as s:
        assert s.scalars(select(CaseResult).where(CaseResult.run_id == run_id)).all() == []
    assert _host_files(settings, "scratch") == []
    settings.storage_url = good_url
    r = ex._perfect(client, w.wt1, settings, spec, case["id"])
    assert r.status_code == 200 and r.json()["duplicate"] is False, r.text
    cid = r.json()["case_result_id"]
    settings.storage_url = "s3://segarena-no-such-bucket/segarena"
    with pytest.raises(StorageError):
        score_case(settings, cid)
    with session_scope(settings.database_url) as s:
        assert s.get(CaseResult, cid).scored is False
    settings.storage_url = good_url
    assert score_case(settings, cid) == "ok"
    assert list(Storage.from_settings(settings).keys(f"runs/{run_id}/")) == []
