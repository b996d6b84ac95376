"""GET /api/status and queue positions on sharded execution (api/status/service.py), on SQLite and PostgreSQL:
workers are the nodes the worker routes keep fresh (hello, ping, claim, shard heartbeats; a clean stop pings
offline); a queued run's position follows the fair shard claim, and real claims take the runs in that order."""

from __future__ import annotations

import pytest
import time
from datetime import timedelta

from tests.api_helpers import app, auth, client, db_settings, seed, submit  # noqa: F401 (fixtures)
from sqlalchemy import select

from api.db import session_scope
from api.models import Run, RunState, Shard, Submission, SubmissionState, WorkerNode, utcnow


pytestmark = pytest.mark.dialects("sqlite", "postgres")  # locks, leases, claim order: the dialect matters


def _worker(client, db_settings, name: str) -> str:
    from api.execution.identity import create_worker

    with session_scope(db_settings.database_url) as s:
        _, token = create_worker(s, db_settings, actor=None, name=name, queues=["cpu"])
    body = {"name": name, "queues": ["cpu"], "host": "h", "pid": 1, "cpu_model": "Test CPU", "cores": 1,
            "calibration_s": 1.0}
    assert client.post("/api/worker/hello", json=body, headers=auth(token)).status_code == 200
    return token


def _age(db_settings, name: str, seconds: float) -> None:
    with session_scope(db_settings.database_url) as s:
        s.scalar(select(WorkerNode).where(WorkerNode.name == name)).last_seen_at = utcnow() - timedelta(seconds=seconds)


def _online(client) -> list[bool]:
    return [w["online"] for w in client.get("/api/status").json()["workers"]]


def test_ping_keeps_an_idle_worker_online_and_a_clean_stop_takes_it_offline(client, db_settings):
    db_settings.execution = "sharded"
    seed(db_settings.database_url)
    token = _worker(client, db_settings, "w1")
    assert _online(client) == [True]
    _age(db_settings, "w1", db_settings.worker_online_s + 5)
    assert _online(client) == [False]  # an idle worker that says nothing ages out
    assert client.post("/api/worker/ping", json={"name": "w1"}, headers=auth(token)).status_code == 204
    assert _online(client) == [True]
    _age(db_settings, "w1", db_settings.worker_online_s + 5)
    assert client.post("/api/worker/claim", json={"name": "w1", "queue": "cpu"}, headers=auth(token)).status_code == 204
    assert _online(client) == [True]  # a claim counts as seen
    assert client.post("/api/worker/ping", json={"name": "w1", "offline": True}, headers=auth(token)).status_code == 204
    assert _online(client) == [False]
    # another identity cannot ping this name; an unknown name must say hello first; participants get 403
    other = _worker(client, db_settings, "w2")
    assert client.post("/api/worker/ping", json={"name": "w1"}, headers=auth(other)).status_code == 403
    assert client.post("/api/worker/ping", json={"name": "nobody"}, headers=auth(other)).status_code == 409


def test_position_follows_the_fair_shard_claim_and_claims_agree(client, db_settings):
    """Team A's work was taken recently; queued: A's second, B's first, A's third (in that order of arrival), two
    shards each. The fair claim reaches B first, then A's two: positions 1, 2, 3, and real claims agree."""
    db_settings.execution = "sharded"
    w = seed(db_settings.database_url, quota=20, shard_size=14)  # tiny has 27 cases: two shards per run
    url = db_settings.database_url
    ids = {}
    for name, token in (("a1", w.token_a), ("a2", w.token_a), ("b1", w.token_b), ("a3", w.token_a)):
        r = submit(client, token)
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
        time.sleep(0.01)  # distinct created_at
    now = utcnow()
    with session_scope(url) as s:  # a1 ran 10 minutes ago for 100 s (its shards claimed then)
        run = s.scalar(select(Run).where(Run.submission_id == ids["a1"]))
        run.state, run.started_at, run.finished_at = RunState.succeeded, now - timedelta(minutes=10), now - timedelta(seconds=500)
        s.get(Submission, ids["a1"]).state = SubmissionState.succeeded
        for sh in s.scalars(select(Shard).where(Shard.run_id == run.id)):
            sh.state, sh.claimed_at = "done", now - timedelta(minutes=10)
    token = _worker(client, db_settings, "w1")

    def view(key, tok):
        r = client.get(f"/api/submissions/{ids[key]}", headers=auth(tok))
        assert r.status_code == 200, r.text
        return r.json()["queue"]

    a2, b1, a3 = view("a2", w.token_a), view("b1", w.token_b), view("a3", w.token_a)
    assert [q["position"] for q in (b1, a2, a3)] == [1, 2, 3]
    assert b1["queued"] == 3 and b1["workers_online"] == 1 and b1["median_run_s"] == 100.0 and b1["estimate_s"] == 100.0
    assert a3["estimate_s"] == 300.0 and "median run" in a3["how"]
    assert view("a1", w.token_a) is None  # not queued: no position
    _age(db_settings, "w1", db_settings.worker_online_s + 5)
    q = view("a2", w.token_a)
    assert q["position"] == 2 and q["estimate_s"] is None and "no worker online" in q["how"]

    # the worker's claims reach the runs in that order (first shard of each run)
    runs = []
    for _ in range(6):
        spec = client.post("/api/worker/claim", json={"name": "w1", "queue": "cpu"}, headers=auth(token)).json()
        if spec["run_id"] not in runs:
            runs.append(spec["run_id"])
    with session_scope(url) as s:
        by_sub = {k: s.scalar(select(Run.id).where(Run.submission_id == v)) for k, v in ids.items()}
    assert runs == [by_sub["b1"], by_sub["a2"], by_sub["a3"]]
    assert view("a3", w.token_a) is None  # running now
