"""One-shot uploads and the submission lifecycle: the rules of a track, quotas, duplicates, visibility."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import datetime, timedelta, UTC

import pytest
from tests.api_helpers import (  # noqa: F401 (fixtures)
    app, auth, client, db_settings, finish_run, image_id_of, make_image_tar, submit, world,
)
from sqlalchemy import func, select

from api.db import session_scope
from api.models import AuditEvent, Run, Submission, Upload


def _leftovers(settings) -> list[str]:
    """Files in storage, but the test set the trusted side materializes when it splits a run into shards."""
    root = settings.storage_dir
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "testsets")


def _count(settings, model) -> int:
    with session_scope(settings.database_url) as s:
        return s.scalar(select(func.count()).select_from(model))


def test_one_shot_upload_queues_a_submission(client, world, db_settings):
    data = make_image_tar(gzip=True, tag="alice/model:v2", user="nobody")
    r = submit(client, world.token_a, data=data, label="first try", content_type="application/gzip")
    assert r.status_code == 201, r.text
    sub = r.json()
    assert sub["state"] == "queued" and sub["attempt"] == 1 and sub["run_state"] == "queued"
    assert sub["team"] == "Team A" and sub["track"] == "main" and sub["label"] == "first try"
    assert sub["image_id"] == image_id_of(data) and sub["image_tag"] == "alice/model:v2" and sub["image_user"] == "nobody"
    assert sub["archive_sha256"] == hashlib.sha256(data).hexdigest() and sub["archive_bytes"] == len(data)
    assert sub["progress"] == {"done": 0, "total": 27, "by_status": {}}  # split into shards at once: the size is known
    assert sub["note"] is None
    assert sub["created_at"].endswith("Z") or sub["created_at"].endswith("+00:00")
    with session_scope(db_settings.database_url) as s:
        row = s.get(Submission, sub["id"])
        stored = db_settings.storage_dir / row.archive_path
        run = s.scalars(select(Run).where(Run.submission_id == row.id)).one()
        assert run.attempt == 1 and run.queue == "cpu" and run.state.value == "queued" and run.task_id
        events = [e.action for e in s.scalars(select(AuditEvent))]
    assert stored.read_bytes() == data and stored.name == "image.tar.gz"
    assert _leftovers(db_settings) == [f"images/{sub['id']}/image.tar.gz"]
    assert events == ["submission.create", "run.split"]
    # the run really is in the embedded broker: one segarena.run_shard message per shard (tiny: 27 cases, 10 a shard)
    with sqlite3.connect(db_settings.broker_url.split("///", 1)[1]) as broker:
        payloads = [p for (p,) in broker.execute("select payload from kombu_message")]
    assert len(payloads) == 3 and all("segarena.run_shard" in p for p in payloads) and run.task_id in payloads[0]
    # plain tar, and no content type at all, are fine too
    assert submit(client, world.token_a, content_type="application/octet-stream").status_code == 201
    r = client.post("/api/challenges/cvpr24/tracks/main/submissions", content=make_image_tar(salt="n"),
                    headers=auth(world.token_a))
    assert r.status_code == 201


@pytest.mark.parametrize("body, status, code, needle", [
    (b"", 422, "invalid_archive", "empty"),
    (b"PK\x03\x04 a zip file" * 50, 422, "invalid_archive", "not a tar archive"),
    (make_image_tar(tag=["a:1", "b:2"]), 422, "invalid_archive", "2 tags"),
    (make_image_tar(arch="arm64", gzip=True), 422, "invalid_archive", "linux/amd64"),
    (make_image_tar(gzip=True)[:300], 422, "invalid_archive", "truncated"),
])
def test_rejected_upload_leaves_nothing_behind(client, world, db_settings, body, status, code, needle):
    r = submit(client, world.token_a, data=body)
    assert r.status_code == status, r.text
    assert r.json()["code"] == code and needle in r.json()["message"]
    assert _leftovers(db_settings) == []
    assert _count(db_settings, Submission) == 0 and _count(db_settings, Run) == 0


def test_size_limit(client, world, db_settings):
    db_settings.max_upload_bytes = 50_000  # the app reads this very settings object
    big = make_image_tar(layer_bytes=80_000)
    r = submit(client, world.token_a, data=big)
    assert r.status_code == 413 and r.json()["code"] == "too_large" and "50000 bytes" in r.json()["message"]

    def chunks():  # no Content-Length: the limit is enforced as the bytes arrive
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]
    r = client.post("/api/challenges/cvpr24/tracks/main/submissions", content=chunks(), headers=auth(world.token_a))
    assert r.status_code == 413
    assert _leftovers(db_settings) == [] and _count(db_settings, Submission) == 0
    assert submit(client, world.token_a, data=make_image_tar(layer_bytes=10_000)).status_code == 201


def test_wrong_content_type_and_no_team(client, world):
    r = client.post("/api/challenges/cvpr24/tracks/main/submissions", files={"file": ("a.tar", make_image_tar())},
                    headers=auth(world.token_a))
    assert r.status_code == 415 and "request body" in r.json()["message"]
    r = submit(client, world.token_org)
    assert r.status_code == 403 and r.json()["code"] == "no_team"
    assert submit(client, None).status_code == 401
    r = submit(client, world.token_a, track="nope")
    assert r.status_code == 404


def test_closed_and_not_yet_open_tracks_refuse(client, world):
    r = submit(client, world.token_a, track="closed")
    assert r.status_code == 403 and r.json()["code"] == "track_closed" and "closed" in r.json()["message"]
    later = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    client.patch("/api/challenges/cvpr24/tracks/booster", json={"opens_at": later}, headers=auth(world.token_org))
    r = submit(client, world.token_a, track="booster")
    assert r.status_code == 403 and "opens for submissions" in r.json()["message"]


def test_duplicate_image_points_to_the_earlier_submission(client, world):
    data = make_image_tar(salt="dup")
    first = submit(client, world.token_a, data=data).json()
    r = submit(client, world.token_a2, data=make_image_tar(salt="dup", gzip=True))  # same image, other member, gzipped
    assert r.status_code == 409 and r.json()["code"] == "duplicate_image"
    assert r.json()["submission_id"] == first["id"] and f"submission {first['id']}" in r.json()["message"]
    # another team, or another track, may submit the same image
    assert submit(client, world.token_b, data=data).status_code == 201
    assert submit(client, world.token_a, data=data, track="booster").status_code == 201
    # once cancelled, the image may come again
    assert client.post(f"/api/submissions/{first['id']}/cancel", headers=auth(world.token_a)).status_code == 200
    assert submit(client, world.token_a, data=data).status_code == 201


def test_quota_per_rolling_day(client, world, db_settings):
    client.patch("/api/challenges/cvpr24/tracks/main", json={"quota_per_day": 2}, headers=auth(world.token_org))
    a = submit(client, world.token_a).json()
    b = submit(client, world.token_a2).json()  # the quota is per team, not per member
    r = submit(client, world.token_a)
    assert r.status_code == 429 and r.json()["code"] == "quota_exceeded" and "quota of 2" in r.json()["message"]
    assert datetime.fromisoformat(r.json()["retry_at"]) > datetime.now(UTC) + timedelta(hours=23)
    assert submit(client, world.token_b).status_code == 201  # other teams are not affected
    # a cancelled submission does not count
    client.post(f"/api/submissions/{a['id']}/cancel", headers=auth(world.token_a))
    c = submit(client, world.token_a)
    assert c.status_code == 201
    assert submit(client, world.token_a).status_code == 429
    # an infrastructure failure does not count; a participant failure does
    finish_run(db_settings.database_url, b["id"], state="failed", run_state="infra_failed", reason="worker lost")
    d = submit(client, world.token_a)
    assert d.status_code == 201
    finish_run(db_settings.database_url, d.json()["id"], state="failed", reason="every case failed")
    assert submit(client, world.token_a).status_code == 429
    # older than a day: no longer counts
    with session_scope(db_settings.database_url) as s:
        s.get(Submission, c.json()["id"]).created_at = datetime.now(UTC) - timedelta(hours=25)
    assert submit(client, world.token_a).status_code == 201
    # quota 0 pauses the track
    client.patch("/api/challenges/cvpr24/tracks/booster", json={"quota_per_day": 0}, headers=auth(world.token_org))
    r = submit(client, world.token_b, track="booster")
    assert r.status_code == 429 and "quota 0" in r.json()["message"]


def test_reproducibility_track_needs_a_succeeded_main_submission(client, world, db_settings):
    r = submit(client, world.token_b, track="repro")
    assert r.status_code == 422 and r.json()["code"] == "reproduces_required"
    target = submit(client, world.token_a).json()
    r = submit(client, world.token_b, track="repro", reproduces=target["id"])
    assert r.status_code == 422 and r.json()["code"] == "invalid_reproduces"  # not succeeded yet
    assert submit(client, world.token_b, track="repro", reproduces=987654).json()["code"] == "invalid_reproduces"
    r = submit(client, world.token_a, reproduces=target["id"])
    assert r.status_code == 422 and "only reproducibility tracks" in r.json()["message"]
    finish_run(db_settings.database_url, target["id"], state="succeeded", dsc=0.8, nsd=0.8)
    r = submit(client, world.token_b, track="repro", reproduces=target["id"], label="retrained")
    assert r.status_code == 201 and r.json()["reproduces_id"] == target["id"]
    # a reproducibility submission cannot itself be reproduced
    finish_run(db_settings.database_url, r.json()["id"], state="succeeded")
    assert submit(client, world.token_a, track="repro", reproduces=r.json()["id"]).json()["code"] == "invalid_reproduces"
    assert submit(client, world.token_b, track="repro", reproduces="x").status_code == 422


def test_teams_see_only_their_own_submissions(client, world, db_settings):
    a = submit(client, world.token_a).json()
    b = submit(client, world.token_b).json()
    finish_run(db_settings.database_url, a["id"], state="running", cases=[{"case_id": "2DBox_US_0001"}])
    for path in ("", "/logs", "/results"):
        r = client.get(f"/api/submissions/{b['id']}{path}", headers=auth(world.token_a))
        assert r.status_code == 404 and r.json()["code"] == "not_found", path
        assert client.get(f"/api/submissions/{a['id']}{path}", headers=auth(world.token_a2)).status_code == 200
        assert client.get(f"/api/submissions/{a['id']}{path}", headers=auth(world.token_org)).status_code == 200
    # a missing id answers exactly like another team's
    missing = client.get("/api/submissions/999999", headers=auth(world.token_a)).json()
    other = client.get(f"/api/submissions/{b['id']}", headers=auth(world.token_a)).json()
    assert missing["code"] == other["code"] and missing["message"].replace("999999",
                                                                           "N") == other["message"].replace(str(b["id"]), "N")
    assert client.post(f"/api/submissions/{b['id']}/cancel", headers=auth(world.token_a)).status_code == 404
    assert [s["id"] for s in client.get("/api/submissions", headers=auth(world.token_a)).json()] == [a["id"]]
    assert {s["id"] for s in client.get("/api/submissions", headers=auth(world.token_org)).json()} == {a["id"], b["id"]}
    org = auth(world.token_org)
    assert [s["id"] for s in client.get("/api/submissions", params={"team_id": world.team_b}, headers=org).json()] == [b["id"]]
    assert [s["id"] for s in client.get("/api/submissions", params={"state": "running"}, headers=org).json()] == [a["id"]]
    assert client.get("/api/submissions", params={"challenge": "cvpr24", "track": "booster"}, headers=org).json() == []
    assert len(client.get("/api/submissions", params={"track_id": world.tracks["main"]}, headers=org).json()) == 2
    # participants cannot widen their view with filters
    assert client.get("/api/submissions", params={"team_id": world.team_b}, headers=auth(world.token_a)).json() == []


def test_progress_logs_and_results(client, world, db_settings):
    r = client.patch("/api/challenges/cvpr24/tracks/main", json={"feedback": "full"}, headers=auth(world.token_org))
    assert r.status_code == 200, r.text  # a validation phase: the team sees everything (see test_feedback_policy.py)
    sub = submit(client, world.token_a).json()
    cases = [
        {"case_id": "2DBox_US_0001", "modality": "US", "dsc": 0.91, "nsd": 0.93, "stdout_tail": "hello\n" * 2000},
        {"case_id": "3DBox_CT_0002", "modality": "CT", "status": "timeout", "dsc": 0, "nsd": 0,
         "reason": "case 3DBox_CT_0002: ran longer than 60 s and was stopped", "stderr_tail": "Traceback"},
    ]
    finish_run(db_settings.database_url, sub["id"], state="running", cases=cases, cases_total=5,
               log_tail="loading image\n" * 5000)
    got = client.get(f"/api/submissions/{sub['id']}", headers=auth(world.token_a)).json()
    assert got["state"] == "running"
    assert got["progress"] == {"done": 2, "total": 5, "by_status": {"ok": 1, "timeout": 1}}
    listed = client.get("/api/submissions", headers=auth(world.token_a)).json()
    assert listed[0]["progress"] == got["progress"]
    logs = client.get(f"/api/submissions/{sub['id']}/logs", headers=auth(world.token_a)).json()
    assert logs["attempt"] == 1 and logs["run_state"] == "running"
    assert len(logs["log_tail"]) <= 16001 and logs["log_tail"].endswith("loading image\n")
    by_case = {c["case"]: c for c in logs["cases"]}
    assert len(by_case["2DBox_US_0001"]["stdout_tail"]) <= 4001 and by_case["2DBox_US_0001"]["stdout_tail"].startswith("…")
    assert by_case["3DBox_CT_0002"]["stderr_tail"] == "Traceback" and by_case["3DBox_CT_0002"]["status"] == "timeout"
    res = client.get(f"/api/submissions/{sub['id']}/results", headers=auth(world.token_a)).json()
    rows = {r["case"]: r for r in res["cases"]}
    assert rows["2DBox_US_0001"]["dsc"] == 0.91 and rows["2DBox_US_0001"]["modality"] == "US"
    assert rows["3DBox_CT_0002"]["status"] == "timeout" and "60 s" in rows["3DBox_CT_0002"]["reason"]
    assert set(rows["2DBox_US_0001"]) >= {"case", "modality", "status", "reason", "runtime_s", "peak_memory_bytes",
                                          "exit_code", "dsc", "nsd", "per_class"}
    assert res["attempt"] == 1 and res["state"] == "running"


def test_cancel_only_before_running(client, world, db_settings):
    a = submit(client, world.token_a).json()
    r = client.post(f"/api/submissions/{a['id']}/cancel", headers=auth(world.token_a2))
    assert r.status_code == 200 and r.json()["state"] == "cancelled" and r.json()["run_state"] == "cancelled"
    r = client.post(f"/api/submissions/{a['id']}/cancel", headers=auth(world.token_a))
    assert r.status_code == 409 and r.json()["code"] == "not_cancellable"
    b = submit(client, world.token_a).json()
    finish_run(db_settings.database_url, b["id"], state="succeeded")
    r = client.post(f"/api/submissions/{b['id']}/cancel", headers=auth(world.token_a))
    assert r.status_code == 409 and "succeeded" in r.json()["message"]
    # sharded execution (the default): a running submission can be cancelled too (its shards stop)
    c = submit(client, world.token_a).json()
    finish_run(db_settings.database_url, c["id"], state="running")
    r = client.post(f"/api/submissions/{c['id']}/cancel", headers=auth(world.token_a))
    assert r.status_code == 200 and r.json()["state"] == "cancelled" and r.json()["run_state"] == "cancelled"
    with session_scope(db_settings.database_url) as s:
        cancels = [e.action for e in s.scalars(select(AuditEvent).where(AuditEvent.action == "submission.cancel"))]
        assert cancels == ["submission.cancel"] * 2


def test_broker_down_keeps_the_submission_queued(client, world, db_settings):
    db_settings.broker_url = "redis://127.0.0.1:9/0"  # nothing listens on the discard port
    r = submit(client, world.token_a)
    assert r.status_code == 201, r.text
    sub = r.json()
    assert sub["state"] == "queued" and "broker" in sub["note"]
    with session_scope(db_settings.database_url) as s:
        run = s.scalars(select(Run).where(Run.submission_id == sub["id"])).one()
        assert run.state.value == "queued" and run.task_id == ""
        failed = s.scalars(select(AuditEvent).where(AuditEvent.action == "run.enqueue_failed")).one()
        assert failed.target_id == str(run.id)
    assert _count(db_settings, Upload) == 0
