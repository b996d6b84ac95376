"""The execution host (worker/shard.py, client, cache) against the REAL API app (api/execution routes)
served by uvicorn over real sockets, with the real sandbox and Docker: a submission of the exec test
image on the micro test set, run entirely through the worker routes, then scored by the trusted side."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.api_helpers import LiveServer, seed
from tests.conftest import REDIS_URL
from tests.exec_helpers import clean_env, exec_image, make_client, remove_image  # noqa: F401
from tests.worker_helpers import seed_submission


@pytest.fixture
def live_api(settings):
    from server.app import create_app

    settings.execution = "sharded"
    server = LiveServer(create_app(settings))
    yield server
    server.stop()


def test_a_submission_runs_through_the_worker_routes_of_the_real_api(settings, live_api, exec_image, docker_client,
                                                                     make_client, clean_env, tmp_path):
    from api.db import session_scope
    from api.execution.identity import create_worker
    from api.execution.scoring import score_case
    from api.models import CaseResult, CaseStatus, Run, RunState, Shard, ShardState
    from worker.config import WorkerConfig
    from worker.shard import ShardExecutor

    from api.execution.shards import enqueue_run_sharded
    from api.models import Track

    w = seed(settings.database_url, quota=5, shard_size=5, testset="micro")  # the micro set's 9 cases in 2 shards
    with session_scope(settings.database_url) as s:
        _, token = create_worker(s, settings, actor=None, name="exec-host", queues=["cpu"])
        # the thin archive (base layers left out) would not pass the upload check: the row is seeded as an
        # accepted upload would leave it
        sub, run = seed_submission(s, track=s.get(Track, w.tracks["main"]), team_name="Team A",
                                   image_id=exec_image["image_id"], archive=exec_image["path"])
        sub.archive_sha256, sub.archive_bytes = exec_image["sha256"], exec_image["bytes"]
        run_id = run.id
    enqueue_run_sharded(settings, run_id)
    remove_image(docker_client, exec_image["image_id"])  # downloaded from the API and loaded by the worker

    config = WorkerConfig(api_url=live_api.url, worker_token=token, broker_url=REDIS_URL,
                          cache_dir=tmp_path / "cache", image_lock_dir=tmp_path / "locks", worker_name="exec-host",
                          calibrate=False)
    client = make_client(config)
    assert client.hello({"name": "exec-host", "queues": ["cpu"], "calibration_s": 0.6})["queues"] == ["cpu"]
    ex = ShardExecutor(config, client)
    reports = []
    while (report := ex.run_next("cpu")).outcome != "none":
        reports.append(report)
        assert len(reports) < 5
    assert [r.outcome for r in reports] == ["done", "done"], [(r.outcome, r.reason) for r in reports]
    assert ex.cache.downloads == 1 and ex.cache.loads == 1
    assert sum(len(r.cases) for r in reports) == 9 and all(set(r.statuses.values()) == {"ok"} for r in reports)

    with session_scope(settings.database_url) as s:
        rows = s.scalars(select(CaseResult).where(CaseResult.run_id == run_id)).all()
        ids = [row.id for row in rows]
        assert len(rows) == 9 and {row.worker_name for row in rows} == {"exec-host"}
        assert all(row.wall_s and row.wall_s >= row.runtime_s > 0 for row in rows)
        overhead = sorted(row.wall_s - row.runtime_s for row in rows)
        print(f"per-case worker overhead (wall_s - runtime_s: download, set-up): median {overhead[4]:.3f} s, "
              f"max {overhead[-1]:.3f} s; container runtime median {sorted(r.runtime_s for r in rows)[4]:.3f} s")
        assert all(sh.state == ShardState.done for sh in s.scalars(select(Shard).where(Shard.run_id == run_id)))
    for cid in ids:  # the trusted scorer (segarena.score_case on the score queue)
        score_case(settings, cid)
    with session_scope(settings.database_url) as s:
        rows = s.scalars(select(CaseResult).where(CaseResult.run_id == run_id)).all()
        assert all(row.status == CaseStatus.ok and row.scored and 0 < row.dsc <= 1 for row in rows), \
            [(row.case_id, row.status, row.reason) for row in rows if row.status != CaseStatus.ok][:3]
        assert s.get(Run, run_id).state == RunState.succeeded
