"""Real processes on PostgreSQL and Redis (tests/scaleout_helpers.ScaleStack: the API under uvicorn,
``segarena scorer`` with the reaper beat, execution workers ``python -m worker.exec_tasks``, a private Redis):
an execution worker killed with SIGKILL mid-shard loses no submission — the trusted reaper requeues its shard
after SEGARENA_HEARTBEAT_TIMEOUT_S, a fresh worker runs it, every case is recorded exactly once, and the fresh
worker removes the killed one's orphaned container at start."""

from __future__ import annotations

import signal

import pytest
from sqlalchemy import func, select

from api.db import session_scope
from api.models import AuditEvent, CaseResult, Run, RunState, Shard, ShardState, Submission, SubmissionState
from tests.scaleout_helpers import ScaleStack, stack_containers
from tests.waiting import wait_until
from tests.worker_helpers import build_test_image, make_testset, seed_track

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.slow]


def test_sigkilled_worker_loses_no_submission(tmp_path, postgres_url, docker_client, base_image):
    image_id = build_test_image(docker_client, base_image, "slow")
    testset = make_testset(tmp_path / "testset")
    archive = tmp_path / "image.tar"
    archive.write_bytes(b"placeholder: the image is already on the engine")
    stack = ScaleStack(tmp_path / "stack", database_url=postgres_url, shard_heartbeat_s=1.0, heartbeat_timeout_s=4,
                       reaper_interval_s=1, extra_env={"SEGARENA_MAX_ATTEMPTS": "3"})
    try:
        stack.start_trusted()
        stack.create_worker_token()
        stack.start_worker("w1")
        stack.wait_workers(["w1"])
        with session_scope(postgres_url) as s:
            track_id = seed_track(s, testset=str(testset)).id
        sub_id, run_id = stack.submit(track_id, "killed", {"image_id": image_id, "path": archive, "sha256": "0" * 64,
                                                           "bytes": archive.stat().st_size})
        # mid-shard: a case container is running
        wait_until(lambda: [c for c in stack_containers(docker_client, stack, run_id) if c.get("State") == "running"],
                   60, "the first case container to run", interval=0.1, detail=stack.log_tail)
        stack.kill("w1", signal.SIGKILL)
        with session_scope(postgres_url) as s:
            assert s.get(Run, run_id).state == RunState.running
            assert [sh.state for sh in s.scalars(select(Shard).where(Shard.run_id == run_id))] == [ShardState.running]
        stack.start_worker("w2")

        def finished():
            with session_scope(postgres_url) as s:
                return s.get(Submission, sub_id).state in (SubmissionState.succeeded, SubmissionState.failed)

        wait_until(finished, 180, "the submission to finish", interval=0.1, detail=stack.log_tail)
        with session_scope(postgres_url) as s:
            sub = s.get(Submission, sub_id)
            assert sub.state == SubmissionState.succeeded, sub.reason
            [run] = s.execute(select(Run).where(Run.submission_id == sub_id)).scalars().all()
            assert run.state == RunState.succeeded and run.attempt == 1  # the shard was requeued, not the run
            [shard] = s.scalars(select(Shard).where(Shard.run_id == run_id)).all()
            assert shard.state == ShardState.done and shard.deliveries == 2 and shard.worker_name == "w2"
            requeued = s.scalars(select(AuditEvent).where(AuditEvent.action == "shard.requeued",
                                                          AuditEvent.target_id == str(run_id))).all()
            assert len(requeued) == 1 and requeued[0].details["reason"].startswith("worker w1 lost: no heartbeat"), \
                [e.details for e in requeued]
            rows = s.scalars(select(CaseResult).where(CaseResult.run_id == run_id)).all()
            assert len(rows) == 3 == len({r.case_id for r in rows})  # each case once
            assert s.scalar(select(func.count()).select_from(CaseResult).where(CaseResult.run_id == run_id)) == 3
            assert sub.aggregates["ok"] == 3 and sub.aggregates["n"] == 3
        # the killed worker's orphaned container is gone (the fresh worker's sweep), and the run left none
        wait_until(lambda: stack_containers(docker_client, stack) == [], 30, "the orphaned container to be removed",
                   interval=0.1, detail=stack.log_tail)
    finally:
        stack.stop()
        for c in stack_containers(docker_client, stack):
            docker_client.api.remove_container(c["Id"], force=True)
        from api.db import dispose_engines

        dispose_engines()
