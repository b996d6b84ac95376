"""The run's total time limit on the sharded path (api/execution/shards.py ``enforce_total_limits``, run by the
trusted reaper): a run whose cases all hit their per-case limit, or whose shards keep being requeued, ends
``failed`` with a clear reason once its track's ``total_timeout_s`` has passed since its first claim; its open
shards are cancelled (the holder is told at its next heartbeat and kills its container). SQLite and PostgreSQL,
over real HTTP through the app; the tests play the execution host."""

from __future__ import annotations

from datetime import timedelta

from tests.api_helpers import app, auth, client, db_settings, submit  # noqa: F401 (fixtures)
from sqlalchemy import select

from api.db import session_scope
from api.models import AuditEvent, Run, RunState, Shard, ShardState, Submission, SubmissionState
from api.params import as_utc
from tests.execution.test_execution_api import _claim, _upload, _world


def _started(db_settings, run_id: int):
    with session_scope(db_settings.database_url) as s:
        return as_utc(s.get(Run, run_id).started_at)


def _run_id(db_settings) -> int:
    with session_scope(db_settings.database_url) as s:
        return s.scalar(select(Run.id))


def test_a_run_whose_cases_time_out_ends_at_its_total_limit(client, db_settings):
    from api.execution.shards import reap_shards

    w = _world(client, db_settings, shard_size=9, case_timeout_s=60, total_timeout_s=200, fail_fast_cases=0)
    assert submit(client, w.token_a).status_code == 201
    spec = _claim(client, w.wt1).json()
    run_id = spec["run_id"]
    for case in spec["cases"][:3]:  # each case used its whole per-case limit
        r = _upload(client, w.wt1, spec, case["id"], status="timeout", runtime_s=60.0, wall_s=60.2,
                    reason="time limit exceeded (60 s): the container was stopped")
        assert r.status_code == 200, r.text
    t0 = _started(db_settings, run_id)
    hb = f"/api/worker/shards/{spec['shard_id']}/heartbeat"
    # before the limit: nothing happens (the heartbeat is fresh enough at this virtual time)
    assert reap_shards(db_settings, now=t0 + timedelta(seconds=5), send=False)["timed_out"] == []
    assert client.post(hb, json={"lease": spec["lease"]}, headers=auth(w.wt1)).json()["cancel"] is False
    out = reap_shards(db_settings, now=t0 + timedelta(seconds=201), send=False)
    assert out["timed_out"] == [run_id]
    with session_scope(db_settings.database_url) as s:
        run = s.get(Run, run_id)
        assert run.state == RunState.failed
        assert run.reason.startswith("total time limit (200 s) reached after 201 s: 3 of 27 cases were run"), run.reason
        assert "not your fault" not in run.reason
        assert run.finished_at is not None
        assert s.get(Submission, run.submission_id).state == SubmissionState.failed
        states = set(s.scalars(select(Shard.state).where(Shard.run_id == run_id)))
        assert states == {ShardState.cancelled}  # the running one and the queued ones
        assert s.scalars(select(AuditEvent.action).where(AuditEvent.action == "run.total_timeout")).all() == [
            "run.total_timeout"]
    # the holder learns it at its next heartbeat and stops; nothing more is claimed or recorded
    assert client.post(hb, json={"lease": spec["lease"]}, headers=auth(w.wt1)).json()["cancel"] is True
    assert _claim(client, w.wt2, "w2").status_code == 204
    assert reap_shards(db_settings, now=t0 + timedelta(seconds=400), send=False)["timed_out"] == []  # once


def test_a_run_whose_shards_keep_being_requeued_ends_as_not_the_teams_fault(client, db_settings):
    from api.execution.shards import reap_shards

    w = _world(client, db_settings, shard_size=27, case_timeout_s=60, total_timeout_s=1000)
    db_settings.max_attempts = 1000  # the per-shard delivery bound would not stop it soon
    assert submit(client, w.token_a).status_code == 201
    run_id = _run_id(db_settings)
    first = _claim(client, w.wt1).json()
    t0 = _started(db_settings, run_id)
    at = t0
    for i in range(4):  # every holder dies: the reaper requeues the shard, another worker takes it
        at = at + timedelta(seconds=db_settings.heartbeat_timeout_s + 5)
        out = reap_shards(db_settings, now=at, send=False)
        assert out["requeued"] == [first["shard_id"]] and out["timed_out"] == [], (i, out)
        assert _claim(client, (w.wt2, w.wt1)[i % 2], ("w2", "w1")[i % 2]).status_code == 200
        with session_scope(db_settings.database_url) as s:  # the new holder's heartbeat is at the virtual time
            s.get(Shard, first["shard_id"]).heartbeat_at = at
    out = reap_shards(db_settings, now=t0 + timedelta(seconds=1001), send=False)
    assert out["timed_out"] == [run_id]
    with session_scope(db_settings.database_url) as s:
        run = s.get(Run, run_id)
        assert run.state == RunState.failed
        assert run.reason.startswith("total time limit (1000 s) reached after 1001 s: 0 of 27 cases were run")
        assert "requeued 4 time(s)" in run.reason and "not your fault" in run.reason
        assert s.get(Shard, first["shard_id"]).state == ShardState.cancelled
