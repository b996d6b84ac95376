"""The audit events notifications read (an outbox over AuditEvent rows): a run that finished, failed (with its
reason), got stuck (a shard requeued by the reaper) and a submission excluded are always recorded, with the
submission they concern — on the real sharded path, through the API."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from api.db import session_scope
from api.models import AuditEvent, utcnow
from tests.api_helpers import app, auth, client, db_settings  # noqa: F401 (fixtures)
from tests.execution.test_execution_api import _claim, _perfect, _run_of, _submit, _upload, _world


def _events(db_settings, *actions: str) -> list[AuditEvent]:
    with session_scope(db_settings.database_url) as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action.in_(actions)).order_by(AuditEvent.id)))


def _drain(client, db_settings, token: str, name: str, **upload) -> list[int]:
    """Claim and run every queued shard as worker ``name`` (perfect outputs, or ``status=...``); case result ids."""
    ids = []
    while (r := _claim(client, token, name)).status_code == 200:
        spec = r.json()
        for case in spec["cases"]:
            up = (_upload(client, token, spec, case["id"], **upload) if upload
                  else _perfect(client, token, db_settings, spec, case["id"]))
            assert up.status_code == 200, up.text
            ids.append(up.json()["case_result_id"])
        fin = client.post(f"/api/worker/shards/{spec['shard_id']}/finish", json={"lease": spec["lease"], "outcome": "done"},
                          headers=auth(token))
        assert fin.status_code == 200, fin.text
    return ids


def test_finished_failed_stuck_and_excluded_are_audited(client, db_settings) -> None:
    from api.execution.scoring import score_case
    from api.execution.shards import reap_shards

    w = _world(client, db_settings, shard_size=27, fail_fast_cases=0)
    good = _submit(client, w.token_a)
    # stuck: the holder stops heartbeating; the reaper requeues its shard
    first = _claim(client, w.wt1).json()
    out = reap_shards(db_settings, now=utcnow() + timedelta(seconds=db_settings.heartbeat_timeout_s + 5))
    assert out["requeued"] == [first["shard_id"]]
    [stuck] = _events(db_settings, "shard.requeued")
    assert stuck.target_type == "run" and stuck.target_id == str(_run_of(db_settings, good))
    assert stuck.details["submission_id"] == good and "no heartbeat" in stuck.details["reason"]
    assert stuck.details["worker"] == "w1" and stuck.actor == "trusted:reaper"
    # finished: every case uploaded and scored
    for cid in _drain(client, db_settings, w.wt2, "w2"):
        score_case(db_settings, cid)
    [done] = _events(db_settings, "run.succeeded")
    assert done.details["submission_id"] == good and done.details["previous"] == "running"
    assert done.details["reason"] == "" and done.details["attempt"] == 1 and done.details["cases"] == 27
    # failed, with its reason: every case crashes
    bad = _submit(client, w.token_b)
    _drain(client, db_settings, w.wt1, "w1", status="crash", reason="predict.sh exited with code 1")
    [failed] = _events(db_settings, "run.failed")
    assert failed.details["submission_id"] == bad and failed.details["infra"] is False
    assert failed.details["reason"].startswith("every case failed; first: case ") and "code 1" in failed.details["reason"]
    # excluded, with the organizer's reason
    r = client.post(f"/api/admin/submissions/{good}/exclude", json={"excluded": True, "reason": "shared weights"},
                    headers=auth(w.token_org))
    assert r.status_code == 200, r.text
    [excluded] = _events(db_settings, "submission.exclude")
    assert excluded.target_type == "submission" and excluded.target_id == str(good)
    assert excluded.details["reason"] == "shared weights" and excluded.details["team_id"] == w.team_a
