"""Real Celery worker processes (Redis broker, PostgreSQL): a worker killed with SIGKILL mid-run loses
no submission — the reaper requeues it and it completes exactly once, as attempt 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from api.db import migrate, session_scope
from api.models import AuditEvent, CaseResult, Run, RunState, Submission, SubmissionState
from tests.worker_helpers import ROOT, build_test_image, make_testset, seed_submission, seed_track
from worker import sandbox as sb

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]


def _start_worker(env: dict, log: Path) -> subprocess.Popen:
    fh = open(log, "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "segarena.cli", "worker", "--queues", "cpu"], cwd=ROOT, env=env,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        fh.close()


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _wait(predicate, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    pytest.fail(f"timed out waiting for {what}; worker log tail:\n{tail}")


def test_sigkilled_worker_loses_no_submission(tmp_path, postgres_url, redis_url, docker_client, base_image):
    from api.settings import Settings
    from worker.celery_app import RUN_TASK, make_celery

    image_id = build_test_image(docker_client, base_image, "slow")
    broker = redis_url.rsplit("/", 1)[0] + "/13"  # a db of its own: no other test's worker takes these messages
    import redis

    r = redis.Redis.from_url(broker)
    for key in ("cpu", "gpu", "unacked", "unacked_index"):
        r.delete(key)
    r.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGARENA_")}
    env.update(SEGARENA_DATA_DIR=str(tmp_path / "data"), SEGARENA_DATABASE_URL=postgres_url, SEGARENA_BROKER_URL=broker,
               SEGARENA_HEARTBEAT_TIMEOUT_S="4", SEGARENA_REAPER_INTERVAL_S="1", SEGARENA_MAX_ATTEMPTS="3",
               SEGARENA_WORKER_QUEUES="cpu", SEGARENA_BASE_IMAGE=base_image, PYTHONUNBUFFERED="1")
    settings = Settings(data_dir=tmp_path / "data", database_url=postgres_url, broker_url=broker,
                        heartbeat_timeout_s=4, reaper_interval_s=1)
    migrate(postgres_url)
    testset = make_testset(tmp_path / "testset")
    archive = tmp_path / "image.tar"
    archive.write_bytes(b"placeholder: the image is already on the engine")
    with session_scope(postgres_url) as s:
        track = seed_track(s, testset=str(testset))
        sub, run = seed_submission(s, track=track, team_name="killed", image_id=image_id, archive=archive)
        sub_id, run_id = sub.id, run.id
    log = tmp_path / "worker.log"
    dep = sb.deployment_id(settings)

    def our_containers():
        return docker_client.api.containers(all=True, filters={"label": [f"{sb.LABEL_DEPLOYMENT}={dep}"]})

    first = _start_worker(env, log)
    second = None
    try:
        app = make_celery(settings)
        app.send_task(RUN_TASK, args=[run_id], queue="cpu")  # what the API does
        # mid-run: a case container of attempt 1 is running
        _wait(lambda: [c for c in our_containers() if c["Labels"].get(sb.LABEL_RUN) == str(run_id)], 60,
              "the first case container", log)
        _kill_group(first, signal.SIGKILL)
        first.wait(timeout=10)
        with session_scope(postgres_url) as s:
            assert s.get(Run, run_id).state in (RunState.loading, RunState.running)
        second = _start_worker(env, log)

        def finished():
            with session_scope(postgres_url) as s:
                return s.get(Submission, sub_id).state in (SubmissionState.succeeded, SubmissionState.failed)

        _wait(finished, 120, "the submission to finish", log)
        with session_scope(postgres_url) as s:
            sub = s.get(Submission, sub_id)
            assert sub.state == SubmissionState.succeeded, sub.reason
            runs = s.execute(select(Run).where(Run.submission_id == sub_id).order_by(Run.attempt)).scalars().all()
            assert [(r.attempt, r.state) for r in runs] == [(1, RunState.infra_failed), (2, RunState.succeeded)]
            assert runs[0].reason.startswith("worker lost:")
            assert sub.summary["run_id"] == runs[1].id and sub.summary["attempt"] == 2
            counts = dict(s.execute(select(CaseResult.run_id, func.count()).where(CaseResult.run_id.in_([r.id for r in runs]))
                                    .group_by(CaseResult.run_id)).all())
            assert counts[runs[1].id] == 3 and counts.get(runs[0].id, 0) < 3
            assert sub.summary["ok"] == 3  # aggregates count attempt 2 only
            started = s.execute(select(func.count()).select_from(AuditEvent).where(
                AuditEvent.action == "run.loading", AuditEvent.target_id == str(runs[1].id))).scalar_one()
            assert started == 1  # attempt 2 ran exactly once
        # the orphaned container of the killed worker is gone, and the finished run left none
        _wait(lambda: our_containers() == [], 20, "the orphaned container to be removed", log)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                _kill_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    _kill_group(proc, signal.SIGKILL)
                    proc.wait(timeout=5)
        for c in our_containers():
            docker_client.api.remove_container(c["Id"], force=True)
        from api.db import dispose_engines

        dispose_engines()
