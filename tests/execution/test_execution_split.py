"""Splitting a run into shards (api/execution/shards.py): the sizes as a pure function, and the split of a real
run on SQLite and PostgreSQL following the workers online on the run's queue, so two workers of a queue take
equal shares of one run and finish it together (bench/scaleout.py's tiny set: 10 shards, 14 and 13 cases)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from tests.api_helpers import app, auth, client, db_settings, seed, submit  # noqa: F401 (fixtures)
from sqlalchemy import select

from api.db import session_scope
from api.execution.shards import shard_sizes
from api.models import Run, Shard, WorkerNode
from tests.execution.test_execution_api import _claim, _world


@pytest.mark.parametrize("cases, size, workers, expected", [
    (27, 3, 1, [3] * 9),
    (27, 3, 2, [3] * 7 + [2] * 3),  # 10 shards: 14 and 13 cases, not 9 shards: 15 and 12
    (27, 9, 2, [7, 7, 7, 6]),
    (27, 27, 2, [27]),  # fits one shard: kept (fewer shards than workers)
    (27, 14, 3, [14, 13]),
    (27, 9, 3, [9, 9, 9]),  # already a multiple
    (28, 3, 1, [3] * 8 + [2] * 2),  # balanced: no 1-case tail shard
    (1, 3, 2, [1]),  # never an empty shard
    (3, 1, 4, [1, 1, 1]),
    (5, 1, 4, [1] * 5),  # never past one case per shard
    (44, 4, 2, [4] * 8 + [3] * 4),
    (0, 3, 2, []),
    (5, 0, 1, [1] * 5),  # a size below 1 counts as 1
])
def test_shard_sizes(cases, size, workers, expected):
    sizes = shard_sizes(cases, size, workers)
    assert sizes == expected
    assert sum(sizes) == cases and all(0 < n <= max(1, size) for n in sizes)
    assert not sizes or max(sizes) - min(sizes) <= 1


def _sizes(db_settings, run_id: int) -> list[int]:
    with session_scope(db_settings.database_url) as s:
        return [len(sh.case_ids) for sh in s.scalars(select(Shard).where(Shard.run_id == run_id).order_by(Shard.index))]


def _last_run(db_settings) -> int:
    with session_scope(db_settings.database_url) as s:
        return s.scalar(select(Run.id).order_by(Run.id.desc()))


def test_a_run_is_split_over_the_workers_online_on_its_queue(client, db_settings):
    w = _world(client, db_settings, shard_size=3)  # two workers said hello on cpu
    db_settings.shard_balance = True  # the default (_world turns it off for the other tests' fixed shapes)
    assert submit(client, w.token_a).status_code == 201
    first = _last_run(db_settings)
    assert _sizes(db_settings, first) == [3] * 7 + [2] * 3
    with session_scope(db_settings.database_url) as s:  # every shard and case exactly once, in manifest order
        shards = s.scalars(select(Shard).where(Shard.run_id == first).order_by(Shard.index)).all()
        ids = [c for sh in shards for c in sh.case_ids]
        assert len(ids) == 27 == len(set(ids))
    # the two workers claim in turn: equal shares (14 and 13 cases)
    taken = {"w1": 0, "w2": 0}
    for i in range(10):
        name, token = ("w1", w.wt1) if i % 2 == 0 else ("w2", w.wt2)
        r = _claim(client, token, name)
        assert r.status_code == 200
        taken[name] += len(r.json()["cases"])
    assert taken == {"w1": 14, "w2": 13}
    # one worker left online (the other's last sighting is older than SEGARENA_WORKER_ONLINE_S): plain split
    with session_scope(db_settings.database_url) as s:
        node = s.scalar(select(WorkerNode).where(WorkerNode.name == "w2"))
        node.last_seen_at = node.last_seen_at - timedelta(seconds=db_settings.worker_online_s + 5)
    assert submit(client, w.token_b).status_code == 201
    assert _sizes(db_settings, _last_run(db_settings)) == [3] * 9
    # the setting turns it off
    db_settings.shard_balance = False
    with session_scope(db_settings.database_url) as s:
        s.scalar(select(WorkerNode).where(WorkerNode.name == "w2")).last_seen_at = \
            s.scalar(select(WorkerNode).where(WorkerNode.name == "w1")).last_seen_at
    assert submit(client, w.token_a).status_code == 201
    assert _sizes(db_settings, _last_run(db_settings)) == [3] * 9
