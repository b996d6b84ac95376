"""The trusted reaper (api/execution/reaper.py, the ``segarena scorer`` beat) on SQLite and PostgreSQL: a run the
API could not split (its test set unavailable at submit time) is accepted with a note, then split and sent by the
reaper once the test set is back, once; the pass also runs the shard reaper and the storage housekeeping."""

from __future__ import annotations

import pytest
from datetime import timedelta

from tests.api_helpers import app, auth, client, db_settings, seed, submit  # noqa: F401 (fixtures)
from sqlalchemy import select

from api.db import session_scope
from api.models import AuditEvent, Run, RunState, Shard, ShardState, Track, utcnow


pytestmark = pytest.mark.dialects("sqlite", "postgres")  # locks, leases, claim order: the dialect matters


def _set_testset(db_settings, name: str) -> None:
    from api.execution.testsets import forget_testsets

    forget_testsets()
    with session_scope(db_settings.database_url) as s:
        for t in s.scalars(select(Track)):
            t.testset = name
        for r in s.scalars(select(Run)):  # the organizer repaired the test set the run names
            r.testset = name


def test_a_run_never_split_is_split_and_sent_by_the_reaper_once(client, db_settings):
    from api.execution.reaper import reap

    db_settings.execution = "sharded"
    w = seed(db_settings.database_url, quota=20, shard_size=9)
    _set_testset(db_settings, "gone")
    r = submit(client, w.token_a)
    assert r.status_code == 201, r.text
    assert r.json().get("note")  # accepted; the run waits for the reaper
    with session_scope(db_settings.database_url) as s:
        run = s.scalar(select(Run))
        assert run.state == RunState.queued and s.scalar(select(Shard)) is None
        run_id = run.id
    _set_testset(db_settings, "tiny")
    assert reap(db_settings, send=False).resent == []  # too recent: the API may still be sending it
    later = utcnow() + timedelta(seconds=db_settings.heartbeat_timeout_s + 5)
    report = reap(db_settings, now=later)
    assert report.resent == [run_id]
    with session_scope(db_settings.database_url) as s:
        shards = s.scalars(select(Shard).where(Shard.run_id == run_id)).all()
        assert len(shards) == 3 and {sh.state for sh in shards} == {ShardState.queued}
        assert all(sh.task_id for sh in shards)  # each sent on the broker
        assert s.scalar(select(Run).where(Run.id == run_id)).testset == "tiny"
        assert s.scalars(select(AuditEvent.action).where(AuditEvent.action == "run.resent")).all() == ["run.resent"]
    again = reap(db_settings, now=later)
    assert again.resent == [] and again.shards["sent"] == []  # split once, sent once
    assert again.uploads_expired == 0 and again.archives_deleted == []


def test_shard_messages_the_broker_lost_are_sent_again_once(client, db_settings, tmp_path):
    """Redis restarted without persistence (``shutdown nosave``): the queued shards' messages are gone. The reaper
    counts the messages waiting per queue and sends one per queued shard the broker no longer holds — once."""
    import redis as redis_mod

    from api.execution.shards import reap_shards
    from tests.resilience_helpers import PrivateRedis

    broker = PrivateRedis(tmp_path / "redis")
    try:
        db_settings.execution = "sharded"
        db_settings.broker_url = broker.url
        w = seed(db_settings.database_url, quota=20, shard_size=9)
        r = submit(client, w.token_a)
        assert r.status_code == 201, r.text
        with session_scope(db_settings.database_url) as s:
            ids = sorted(s.scalars(select(Shard.id).where(Shard.state == ShardState.queued)))
        assert len(ids) == 3
        waiting = redis_mod.Redis.from_url(broker.url)
        assert waiting.llen("cpu") == 3
        assert reap_shards(db_settings)["resent"] == []  # every queued shard has its message
        broker.restart()  # every message lost
        assert waiting.llen("cpu") == 0
        assert reap_shards(db_settings)["resent"] == ids
        assert waiting.llen("cpu") == 3
        assert reap_shards(db_settings)["resent"] == []  # once
        waiting.close()
    finally:
        broker.stop()
