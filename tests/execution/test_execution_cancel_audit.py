"""Sharded execution, over real HTTP through the app on SQLite and PostgreSQL:

- cancelling a RUNNING submission (the participant's own cancel): the run ends ``cancelled`` at once, the running
  shard's holder is told ``cancel: true`` at its next heartbeat and upload, nothing more is recorded or scored for
  it (an output uploaded just before is not scored, and the reaper does not re-send it), the cancellation counts
  toward the quota (issue 13); a finished one cannot be cancelled (409);
- timing fairness in the run audit: per-worker case counts and calibration (``/api/admin/runs/{id}/workers`` and
  the organizer page ``/admin/runs/{id}``), a worker more than 10 % off its queue's median flagged.

(tests/test_scaleout.py measures the cancel with real worker processes and containers.)"""

from __future__ import annotations

import pytest
from datetime import timedelta

import tests.execution.test_execution_api as tea
from tests.api_helpers import app, auth, client, db_settings  # noqa: F401 (fixtures)
from sqlalchemy import select

from api.db import session_scope
from api.models import CaseResult, Run, RunState, Shard, ShardState, Submission, SubmissionState, WorkerNode, utcnow


@pytest.mark.dialects("sqlite", "postgres")  # the dialect matters here: locks, concurrency
def test_cancel_of_a_running_sharded_submission_stops_it_and_scores_nothing_more(client, db_settings):
    from api.execution.scoring import score_case
    from api.execution.shards import reap_shards

    w = tea._world(client, db_settings)
    sub = tea._submit(client, w.token_a)
    spec = tea._claim(client, w.wt1).json()
    first, second, third = (c["id"] for c in spec["cases"][:3])
    scored = tea._perfect(client, w.wt1, db_settings, spec, first).json()["case_result_id"]
    score_case(db_settings, scored)
    pending = tea._perfect(client, w.wt1, db_settings, spec, second).json()["case_result_id"]  # not scored yet
    assert client.get(f"/api/submissions/{sub}", headers=auth(w.token_a)).json()["state"] == "running"

    r = client.post(f"/api/submissions/{sub}/cancel", headers=auth(w.token_a))
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "cancelled" and "counts toward the quota: its run had started" in r.json()["reason"]
    run_id = tea._run_of(db_settings, sub)
    with session_scope(db_settings.database_url) as s:
        assert s.get(Run, run_id).state == RunState.cancelled
        assert {sh.state for sh in s.scalars(select(Shard).where(Shard.run_id == run_id))} == {ShardState.cancelled}
    hb = client.post(f"/api/worker/shards/{spec['shard_id']}/heartbeat", json={"lease": spec["lease"]},
                     headers=auth(w.wt1))
    assert hb.status_code == 200 and hb.json() == {"cancel": True}
    up = tea._perfect(client, w.wt1, db_settings, spec, third)
    assert up.status_code == 200 and up.json()["cancel"] is True and up.json()["case_result_id"] is None
    assert score_case(db_settings, pending) is None  # nothing more is scored for it
    later = utcnow() + timedelta(seconds=db_settings.heartbeat_timeout_s + 5)
    assert pending not in reap_shards(db_settings, now=later, send=False)["rescored"]
    with session_scope(db_settings.database_url) as s:
        rows = {c.case_id: c for c in s.scalars(select(CaseResult).where(CaseResult.run_id == run_id))}
        assert set(rows) == {first, second} and rows[first].scored and not rows[second].scored
    fin = client.post(f"/api/worker/shards/{spec['shard_id']}/finish", json={"lease": spec["lease"], "outcome": "done"},
                      headers=auth(w.wt1))
    assert fin.json() == {"cancel": True}
    with session_scope(db_settings.database_url) as s:
        assert s.get(Run, run_id).state == RunState.cancelled
        assert s.get(Submission, sub).state == SubmissionState.cancelled
    # the cancelled run's other shards are never claimed; another team's run is
    assert tea._claim(client, w.wt2, name="w2").status_code == 204
    again = client.post(f"/api/submissions/{sub}/cancel", headers=auth(w.token_a))
    assert again.status_code == 409 and again.json()["code"] == "not_cancellable"


def test_run_audit_lists_workers_and_flags_a_host_off_the_queue_median(client, db_settings):
    w = tea._world(client, db_settings)
    wt3 = tea._worker(db_settings, "w3")
    assert tea._hello(client, w.wt1, "w1", calibration_s=1.00).status_code == 200
    assert tea._hello(client, w.wt2, "w2", calibration_s=1.04).status_code == 200
    hello3 = tea._hello(client, wt3, "w3", calibration_s=1.30)
    assert hello3.status_code == 200 and "deviates" in hello3.json()["calibration_flag"]
    sub = tea._submit(client, w.token_a)
    for token, name, n in ((w.wt1, "w1", 2), (w.wt2, "w2", 1), (wt3, "w3", 3)):
        spec = tea._claim(client, token, name=name).json()
        for case in spec["cases"][:n]:
            assert tea._upload(client, token, spec, case["id"], status="crash").status_code == 200
    run_id = tea._run_of(db_settings, sub)
    r = client.get(f"/api/admin/runs/{run_id}/workers", headers=auth(w.token_org))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["queue"] == "cpu" and body["queue_median_calibration_s"] == 1.04
    table = {x["name"]: x for x in body["workers"]}
    assert {n: x["cases"] for n, x in table.items()} == {"w1": 2, "w2": 1, "w3": 3}
    assert body["flagged"] == ["w3"] and table["w3"]["flagged"] and not table["w1"]["flagged"]
    assert abs(table["w3"]["deviation"] - (1.30 - 1.04) / 1.04) < 1e-9 and table["w2"]["deviation"] == 0
    assert client.get(f"/api/admin/runs/{run_id}/workers", headers=auth(w.token_a)).status_code == 403
    assert client.get(f"/api/admin/runs/{run_id}/workers", headers=auth(w.wt1)).status_code == 403
    assert client.get("/api/admin/runs/999999/workers", headers=auth(w.token_org)).status_code == 404

    from tests.leaderboard_helpers import sign_in

    assert sign_in(client, w.token_org).status_code in (302, 303)  # the organizer pages take a browser session
    page = client.get(f"/admin/runs/{run_id}")
    assert page.status_code == 200, page.text[:500]
    html = page.text
    assert 'id="workers"' in html and "deviates &gt; 10 %" in html and "+25.0 %" in html and "1.300" in html
    with session_scope(db_settings.database_url) as s:
        assert s.scalar(select(WorkerNode.calibration_s).where(WorkerNode.name == "w3")) == 1.30

