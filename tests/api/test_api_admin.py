"""Organizer tools: the full audit record, re-runs (exactly one under concurrency), exclusion, baselines, CSV."""

from __future__ import annotations

import pytest
import csv
import io
import threading

import httpx
from tests.api_helpers import (  # noqa: F401 (fixtures)
    app, auth, client, db_settings, finish_run, live, submit, world,
)
from sqlalchemy import select

from api.admin.service import EXPORT_COLUMNS
from api.db import session_scope
from api.models import Run


def test_full_audit_record(client, world, db_settings):
    sub = submit(client, world.token_a, label="audited").json()
    finish_run(db_settings.database_url, sub["id"], state="succeeded", dsc=0.81, nsd=0.82,
               cases=[{"case_id": "2DBox_US_0001", "stdout_tail": "ok"}, {"case_id": "3DBox_MR_0002", "status": "oom",
                                                                            "reason": "used more than 8 GiB"}],
               worker_host="node-7", docker_version="20.10.24", cpu_model="Xeon W-2133", cpuset="0-1",
               container_params={"mem_limit": "8g", "network_mode": "none", "nano_cpus": 1_000_000_000})
    r = client.get(f"/api/admin/submissions/{sub['id']}", headers=auth(world.token_org))
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["archive_path"] == f"images/{sub['id']}/image.tar"
    [run] = view["runs"]
    assert run["worker_host"] == "node-7" and run["docker_version"] == "20.10.24" and run["cpu_model"] == "Xeon W-2133"
    assert run["cpuset"] == "0-1" and run["container_params"]["network_mode"] == "none"
    assert run["requested_by"].startswith("upload:")
    assert {c["case_id"]: c["status"] for c in view["cases"]} == {"2DBox_US_0001": "ok", "3DBox_MR_0002": "oom"}
    assert view["cases"][0]["stdout_tail"] == "ok"
    assert [e["action"] for e in view["audit"]] == ["submission.create", "run.split"]  # split into shards at once
    assert view["audit"][0]["actor"] == f"participant:alice#{world.member_a}"
    # participants get 403 on organizer routes (the route is organizer-only, not a hidden object)
    assert client.get(f"/api/admin/submissions/{sub['id']}", headers=auth(world.token_a)).status_code == 403
    assert client.get("/api/admin/submissions/424242", headers=auth(world.token_org)).status_code == 404


def test_rerun_is_a_new_attempt(client, world, db_settings):
    sub = submit(client, world.token_a).json()
    org = auth(world.token_org)
    r = client.post(f"/api/admin/submissions/{sub['id']}/rerun", headers=org)
    assert r.status_code == 409 and r.json()["code"] == "run_active"  # attempt 1 is still queued
    finish_run(db_settings.database_url, sub["id"], state="failed", reason="every case failed",
               cases=[{"case_id": "c1", "status": "crash"}], dsc=0.0, nsd=0.0)
    r = client.post(f"/api/admin/submissions/{sub['id']}/rerun", headers=org)
    assert r.status_code == 201, r.text
    again = r.json()
    assert again["attempt"] == 2 and again["state"] == "queued" and again["reason"] == "" and again["dsc"] is None
    assert again["progress"] == {"done": 0, "total": 27, "by_status": {}}  # the new attempt has no results yet
    with session_scope(db_settings.database_url) as s:
        runs = list(s.scalars(select(Run).where(Run.submission_id == sub["id"]).order_by(Run.attempt)))
    assert [(r.attempt, r.state.value) for r in runs] == [(1, "failed"), (2, "queued")]
    assert runs[1].task_id and runs[1].requested_by == f"rerun:{world.organizer}"
    # the first attempt's results are kept for the audit, not shown as the latest
    view = client.get(f"/api/admin/submissions/{sub['id']}", headers=org).json()
    assert [c["run_id"] for c in view["cases"]] == [runs[0].id]
    assert client.get(f"/api/submissions/{sub['id']}/results", headers=auth(world.token_a)).json()["cases"] == []
    assert client.post(f"/api/admin/submissions/{sub['id']}/rerun", headers=auth(world.token_a)).status_code == 403


@pytest.mark.dialects("sqlite", "postgres")  # the dialect matters here: locks, concurrency
def test_two_organizers_rerun_at_once_gives_one_attempt(live, world, db_settings):
    with httpx.Client(base_url=live.url, timeout=60) as http:
        sub = submit(http, world.token_a).json()
    finish_run(db_settings.database_url, sub["id"], state="succeeded", dsc=0.5, nsd=0.5)
    barrier = threading.Barrier(8)
    codes: list[int] = []

    def rerun():
        with httpx.Client(base_url=live.url, timeout=60) as http:
            barrier.wait()
            codes.append(http.post(f"/api/admin/submissions/{sub['id']}/rerun", headers=auth(world.token_org)).status_code)

    threads = [threading.Thread(target=rerun) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [201] + [409] * 7
    with session_scope(db_settings.database_url) as s:
        assert [r.attempt for r in s.scalars(select(Run).where(Run.submission_id == sub["id"]))] == [1, 2]


def test_exclude_and_baseline(client, world):
    sub = submit(client, world.token_a).json()
    org = auth(world.token_org)
    r = client.post(f"/api/admin/submissions/{sub['id']}/exclude", json={"excluded": True}, headers=org)
    assert r.status_code == 422 and r.json()["code"] == "reason_required"
    r = client.post(f"/api/admin/submissions/{sub['id']}/exclude", json={"excluded": True,
                                                                         "reason": "used test labels"}, headers=org)
    assert r.status_code == 200 and r.json()["excluded"] is True and r.json()["exclusion_reason"] == "used test labels"
    # the team sees why
    mine = client.get(f"/api/submissions/{sub['id']}", headers=auth(world.token_a)).json()
    assert mine["excluded"] is True and mine["exclusion_reason"] == "used test labels"
    r = client.post(f"/api/admin/submissions/{sub['id']}/exclude", json={"excluded": False}, headers=org)
    assert r.json()["excluded"] is False and r.json()["exclusion_reason"] == ""
    r = client.post(f"/api/admin/submissions/{sub['id']}/baseline", json={"is_baseline": True}, headers=org)
    assert r.status_code == 200 and r.json()["is_baseline"] is True
    assert client.post(f"/api/admin/submissions/{sub['id']}/baseline", json={"is_baseline": "maybe"},
                       headers=org).status_code == 422
    assert client.post(f"/api/admin/submissions/{sub['id']}/exclude", json={"excluded": True, "reason": "x"},
                       headers=auth(world.token_a)).status_code == 403
    actions = [e["action"] for e in client.get("/api/admin/audit", params={"target_id": str(sub["id"]),
                                                                           "target_type": "submission"},
                                               headers=org).json()]
    assert actions == ["submission.baseline", "submission.include", "submission.exclude", "submission.create"]
    page = client.get("/api/admin/audit", params={"limit": 2}, headers=org).json()
    older = client.get("/api/admin/audit", params={"limit": 2, "before_id": page[-1]["id"]}, headers=org).json()
    assert len(page) == 2 and all(e["id"] < page[-1]["id"] for e in older)


def test_csv_export_has_every_submission_and_case(client, world, db_settings):
    a = submit(client, world.token_a, label="=HYPERLINK(\"http://x\")").json()
    b = submit(client, world.token_b).json()
    finish_run(db_settings.database_url, a["id"], state="succeeded", dsc=0.7, nsd=0.6,
               cases=[{"case_id": "2DBox_US_0001", "dsc": 0.75}, {"case_id": "3DBox_CT_0002", "status": "timeout", "dsc": 0.0}])
    r = client.get("/api/admin/export.csv", headers=auth(world.token_org))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0]) == EXPORT_COLUMNS
    assert [(row["submission_id"], row["case_id"]) for row in rows] == [
        (str(a["id"]), "2DBox_US_0001"), (str(a["id"]), "3DBox_CT_0002"), (str(b["id"]), "")]
    first = rows[0]
    assert first["team"] == "Team A" and first["dsc"] == "0.75" and first["case_status"] == "ok"
    assert first["label"].startswith("'=")  # a spreadsheet would run it as a formula
    assert first["is_latest_attempt"] == "True" and first["attempt"] == "1" and first["per_class"].startswith("{")
    assert rows[1]["case_status"] == "timeout"
    only_b = client.get("/api/admin/export.csv", params={"track": "booster"}, headers=auth(world.token_org)).text
    assert only_b.strip() == ",".join(EXPORT_COLUMNS)
    assert client.get("/api/admin/export.csv", headers=auth(world.token_a)).status_code == 403
