"""A run through THE execution path (sharded: the real API app over HTTP, the execution host
``worker.shard.ShardExecutor`` on a real Docker engine, the trusted scorer inline; tests/run_helpers.py)
against real SQLite: results and audit, participant failures, time limits, redelivery, infrastructure
retries, cancel between cases, the trusted reaper and the execution host's orphan sweep.

The fair and atomic claim across teams is tested on the worker routes in tests/test_execution_api.py."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from api.db import migrate, session_scope
from api.models import (AuditEvent, CaseResult, CaseStatus, Member, Run, RunState, Shard, ShardState, Submission,
                        SubmissionState, utcnow)
from tests.behaviours import expected
from tests.run_helpers import ShardedHost, create_run, inline_sender, run_sharded
from tests.worker_helpers import build_test_image, make_testset, segarena_containers
from worker import sandbox as sb

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def images(docker_client, base_image):
    return {n: build_test_image(docker_client, base_image, n) for n in ("correct", "crash", "sleep_forever")}


@pytest.fixture
def wsettings(settings):
    s = settings.model_copy(update={"heartbeat_timeout_s": 30, "max_attempts": 3, "execution": "sharded"})
    migrate(s.database_url)
    return s


@pytest.fixture
def testset(tmp_path):
    return str(make_testset(tmp_path / "testset"))


@pytest.fixture
def archive(tmp_path):
    # the images are present on the engine already, so the execution host never downloads this file
    p = tmp_path / "image.tar"
    p.write_bytes(b"placeholder")
    return p


def _submit(wsettings, testset, archive, image_id, team="team-a", **track_fields) -> tuple[int, int]:
    return create_run(wsettings, testset=testset, image_id=image_id, archive=archive, team=team, **track_fields)


def test_run_succeeds_with_case_results_and_audit(wsettings, testset, archive, images, docker_client):
    sub_id, run_id = _submit(wsettings, testset, archive, images["correct"])
    with ShardedHost(wsettings, docker=docker_client) as host:
        result = host.run(run_id)
        name, dep = host.name, sb.deployment_id(host.config)
    assert result.requeues == [] and [r.outcome for r in result.reports] == ["done"]
    with session_scope(wsettings.database_url) as s:
        run, sub = s.get(Run, run_id), s.get(Submission, sub_id)
        assert run.state == RunState.succeeded and sub.state == SubmissionState.succeeded, (run.reason, sub.reason)
        cases = s.execute(select(CaseResult).where(CaseResult.run_id == run_id)).scalars().all()
        assert sorted(c.case_id for c in cases) == ["2DBox_US_0000", "2DBox_US_0001", "3DBox_CT_0000"]
        assert all(c.status == CaseStatus.ok and c.scored and 0 < c.dsc <= 1 and c.runtime_s > 0 for c in cases)
        assert all("uid=1000" in c.stdout_tail for c in cases)
        assert sub.dsc == pytest.approx(sum(c.dsc for c in cases) / 3)
        assert sub.runtime_s == pytest.approx(sum(c.runtime_s for c in cases) / 3)
        assert sub.aggregates["ok"] == 3 and set(sub.aggregates["by_modality"]) == {"US", "CT"}
        assert sub.metric_profile == "default" and sub.finished_at is not None
        # audit fields: the run (first claim), every case (which worker, which shard, wall time on the worker)
        assert run.worker_host and run.docker_version and run.cpu_model
        assert all(c.worker_name == name and c.shard_id and c.wall_s >= c.runtime_s for c in cases)
        assert run.container_params["network_mode"] == "none" and run.container_params["cap_drop"] == ["ALL"]
        assert run.container_params["cpuset_cpus"]
        assert run.started_at and run.finished_at and run.heartbeat_at and run.cases_total == 3
        actions = [e.action for e in s.execute(select(AuditEvent).where(AuditEvent.target_type == "run",
                                                                         AuditEvent.target_id == str(run_id))
                                               .order_by(AuditEvent.id)).scalars()]
        assert actions[:2] == ["run.split", "run.running"] and actions[-1] == "run.succeeded", actions
        assert [sh.state for sh in s.scalars(select(Shard).where(Shard.run_id == run_id))] == [ShardState.done]
    assert [c for c in segarena_containers(docker_client) if c["Labels"].get(sb.LABEL_DEPLOYMENT) == dep] == []


def test_participant_failure_is_final_and_worker_keeps_serving(wsettings, testset, archive, images, docker_client):
    bad_sub, bad_run = _submit(wsettings, testset, archive, images["crash"], team="team-crash")
    with ShardedHost(wsettings, docker=docker_client) as host:
        result = host.run(bad_run)
        with session_scope(wsettings.database_url) as s:
            run, sub = s.get(Run, bad_run), s.get(Submission, bad_sub)
            assert run.state == RunState.failed and sub.state == SubmissionState.failed
            assert sub.reason.startswith("every case failed; first: case 2DBox_US_0000: predict.sh exited with code 1")
            cases = s.execute(select(CaseResult).where(CaseResult.run_id == bad_run)).scalars().all()
            assert len(cases) == 3 and all(c.status == CaseStatus(expected("crash")) and c.dsc == 0 and c.nsd == 0
                                           for c in cases)
            assert all(c.runtime_s == 30 for c in cases)  # worst value: the case time limit
            assert "model weights not found" in cases[0].stderr_tail
            assert sub.dsc == 0 and sub.runtime_s == 30
        assert result.requeues == []  # participant failures are not retried
        assert [r.outcome for r in result.reports] == ["done"]
        _, good_run = _submit(wsettings, testset, archive, images["correct"], team="team-good")
        assert host.run(good_run).state == RunState.succeeded  # the same execution host keeps serving


def test_timeout_case_scores_worst_and_run_goes_on(wsettings, archive, images, docker_client, tmp_path):
    one = make_testset(tmp_path / "one", n2d=1, n3d=0)
    _, rid = _submit(wsettings, str(one), archive, images["sleep_forever"], case_timeout_s=1)
    result = run_sharded(rid, wsettings, docker=docker_client)
    with session_scope(wsettings.database_url) as s:
        case = s.execute(select(CaseResult).where(CaseResult.run_id == rid)).scalar_one()
        assert case.status == CaseStatus(expected("sleep_forever")) and case.runtime_s == 1
        assert case.reason.startswith("case 2DBox_US_0000: time limit exceeded (1 s)")
        assert s.get(Run, rid).state == RunState.failed
    assert result.requeues == []


def test_redelivery_never_double_counts(wsettings, testset, archive, images, docker_client):
    from api.execution.shards import enqueue_run_sharded

    _, rid = _submit(wsettings, testset, archive, images["correct"])
    with session_scope(wsettings.database_url) as s:
        # a case recorded by an earlier delivery of this run: left out of the shards
        s.add(CaseResult(run_id=rid, case_id="2DBox_US_0001", status=CaseStatus.ok, dsc=0.5, nsd=0.5, runtime_s=1.0,
                         modality="US"))
    with ShardedHost(wsettings, docker=docker_client) as host:
        with inline_sender(host.settings) as sender:
            enqueue_run_sharded(host.settings, rid)
            enqueue_run_sharded(host.settings, rid)  # sent twice (a redelivery): the same shard, split once
        assert len(sender.sent) == 2 and len({args for _, args, _ in sender.sent}) == 1
        result = host.run(rid, enqueue=False)
        assert result.state == RunState.succeeded and len(result.reports) == 1
        spec = result.reports[0]
        assert sorted(spec.cases) == ["2DBox_US_0000", "3DBox_CT_0000"]
        # the message redelivered (or a spare one): nothing to claim, nothing re-run
        assert host.executor.run_next("cpu").outcome == "none"
        with inline_sender(host.settings) as sender:
            enqueue_run_sharded(host.settings, rid)
        assert sender.sent == []
    with session_scope(wsettings.database_url) as s:
        cases = s.execute(select(CaseResult).where(CaseResult.run_id == rid)).scalars().all()
        assert len(cases) == 3
        kept = next(c for c in cases if c.case_id == "2DBox_US_0001")
        assert kept.dsc == 0.5 and kept.stdout_tail == ""  # not re-run
        assert s.get(Run, rid).state == RunState.succeeded


def test_infra_failure_requeues_the_shard_then_fails(wsettings, testset, archive, images):
    """An execution host whose engine is unreachable hands the shard back (infra) on every delivery: it is requeued
    with a new message, and after ``max_attempts`` deliveries the run fails, not by the team's fault."""
    sub_id, rid = _submit(wsettings, testset, archive, images["correct"])
    with ShardedHost(wsettings, docker_host="unix:///nonexistent/docker.sock") as host:
        result = host.run(rid)
    assert [r.outcome for r in result.reports] == ["infra"] * 3, [(r.outcome, r.reason) for r in result.reports]
    assert all("Docker engine" in r.reason or "docker" in r.reason.lower() for r in result.reports), result.reports[0]
    sid = result.reports[0].shard_id
    assert result.requeues == [(sid, "cpu"), (sid, "cpu")]  # delivery 2 and 3
    with session_scope(wsettings.database_url) as s:
        sub, run, shard = s.get(Submission, sub_id), s.get(Run, rid), s.get(Shard, sid)
        assert shard.state == ShardState.lost and shard.deliveries == 3
        assert run.state in (RunState.infra_failed, RunState.failed) and sub.state == SubmissionState.failed
        assert sub.reason.startswith("infrastructure failure on all 3 deliveries"), sub.reason
        assert "not your fault" in sub.reason
        assert s.scalar(select(func.count()).select_from(CaseResult).where(CaseResult.run_id == rid)) == 0
        requeued = s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "shard.requeued"))
        assert requeued == 2


def test_cancel_between_cases(wsettings, testset, archive, images, docker_client):
    from api.submissions.service import cancel_submission

    sub_id, rid = _submit(wsettings, testset, archive, images["correct"])
    with session_scope(wsettings.database_url) as s:
        team_id = s.get(Submission, sub_id).team_id
        s.add(Member(team_id=team_id, name="alice", email="alice@example.org"))
    done = threading.Event()

    def cancel_after_first_case():
        while not done.is_set():
            with session_scope(wsettings.database_url) as s:
                if s.execute(select(func.count()).select_from(CaseResult).where(CaseResult.run_id == rid)).scalar_one():
                    member = s.scalars(select(Member).where(Member.name == "alice")).one()
                    cancel_submission(session=s, member=member, submission_id=sub_id, settings=wsettings)
                    return
            time.sleep(0.02)

    t = threading.Thread(target=cancel_after_first_case)
    t.start()
    with ShardedHost(wsettings, docker=docker_client) as host:
        try:
            result = host.run(rid)
        finally:
            done.set()
            t.join()
        assert [r.outcome for r in result.reports] == ["cancelled"], result.reports
        with session_scope(wsettings.database_url) as s:
            assert s.get(Run, rid).state == RunState.cancelled
            assert s.get(Submission, sub_id).state == SubmissionState.cancelled
            n = s.execute(select(func.count()).select_from(CaseResult).where(CaseResult.run_id == rid)).scalar_one()
            assert 1 <= n < 3
            assert [sh.state for sh in s.scalars(select(Shard).where(Shard.run_id == rid))] == [ShardState.cancelled]

        # a run whose submission was cancelled while queued (split and sent) is never started
        sub2, rid2 = _submit(wsettings, testset, archive, images["correct"])
        from api.execution.shards import enqueue_run_sharded

        with inline_sender(host.settings):
            enqueue_run_sharded(host.settings, rid2)
        with session_scope(wsettings.database_url) as s:
            member = s.scalars(select(Member).where(Member.name == "alice")).one()
            member.team_id = s.get(Submission, sub2).team_id
            s.commit()
            cancel_submission(session=s, member=member, submission_id=sub2, settings=wsettings)
        again = host.run(rid2, enqueue=False)
        assert again.reports == [] and again.state == RunState.cancelled
        with session_scope(wsettings.database_url) as s:
            assert s.get(Run, rid2).started_at is None


def test_the_reaper_requeues_a_lost_shard_and_another_host_finishes_it_once(wsettings, testset, archive, images,
                                                                          docker_client):
    """A host claims a shard and dies (no heartbeat): the trusted reaper requeues it under a new lease with a new
    message, the old lease is refused, another host runs it, every case is recorded once. A queued run that was
    never split (the broker was down) is split and sent by the same pass."""
    from api.execution.reaper import reap
    from api.execution.shards import enqueue_run_sharded
    from worker.client import LeaseLost

    sub_id, rid = _submit(wsettings, testset, archive, images["correct"], team="L")
    _, stuck = _submit(wsettings, testset, archive, images["correct"], team="S")
    with session_scope(wsettings.database_url) as s:
        s.get(Run, stuck).created_at = utcnow() - timedelta(seconds=wsettings.heartbeat_timeout_s + 5)
    with ShardedHost(wsettings, docker=docker_client) as dead, ShardedHost(wsettings, docker=docker_client) as other:
        with inline_sender(wsettings) as sender:
            enqueue_run_sharded(wsettings, rid)
            spec = dead.client.claim(dead.name, "cpu")  # ... and the host dies before its first heartbeat
            assert spec["run_id"] == rid
            first = reap(wsettings)
            assert first.shards["requeued"] == [] and first.resent == [stuck]  # fresh heartbeat: left alone
            later = utcnow() + timedelta(seconds=wsettings.heartbeat_timeout_s + 5)
            report = reap(wsettings, now=later)
            assert report.shards["requeued"] == [spec["shard_id"]] and report.resent == []
            again = reap(wsettings, now=later)
            assert again.shards["requeued"] == [] and again.resent == []  # one message per loss
        shard_msgs = [args[0] for args, _ in sender.of("segarena.run_shard")]
        assert shard_msgs.count(spec["shard_id"]) == 2  # the first message and the requeue
        with pytest.raises(LeaseLost):
            dead.client.heartbeat(spec["shard_id"], spec["lease"])
        result = other.run(rid, enqueue=False)
        assert result.state == RunState.succeeded, result.sub_reason
        assert other.run(stuck, enqueue=False).state == RunState.succeeded
    with session_scope(wsettings.database_url) as s:
        rows = s.execute(select(CaseResult).where(CaseResult.run_id == rid)).scalars().all()
        assert len(rows) == 3 == len({r.case_id for r in rows}) and {r.worker_name for r in rows} == {other.name}
        assert s.get(Shard, spec["shard_id"]).deliveries == 2
        assert s.get(Submission, sub_id).aggregates["n"] == 3


def test_the_execution_host_removes_orphan_containers_of_dead_workers(wsettings, base_image, docker_client, tmp_path):
    """At start an execution host removes its deployment's shard containers whose worker process is gone (they
    hold pinned cores) — not a live worker's, nor another deployment's."""
    import socket

    from worker.config import WorkerConfig
    from worker.shard import LABEL_SHARD, sweep_orphans

    config = WorkerConfig(api_url="http://127.0.0.1:9", worker_token="wk_x", broker_url="redis://127.0.0.1:9/0",
                          cache_dir=tmp_path / "cache", deployment_id=f"test-{os.urandom(4).hex()}")
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = subprocess.Popen(["sleep", "60"])
    host = socket.gethostname()

    def mk(pid, deployment):
        return docker_client.containers.create(base_image, ["sleep", "60"], network_mode="none", labels={
            sb.LABEL_RUN: "1", sb.LABEL_CASE: "c", LABEL_SHARD: "1", sb.LABEL_WORKER: f"{host}:{pid}",
            sb.LABEL_DEPLOYMENT: deployment})

    orphan, keep, other = mk(dead.pid, config.deployment_id), mk(alive.pid, config.deployment_id), \
        mk(dead.pid, "another-deployment")
    try:
        assert sweep_orphans(docker_client, config) == [orphan.id]
        left = [c["Id"] for c in segarena_containers(docker_client)]
        assert keep.id in left and other.id in left and orphan.id not in left
    finally:
        alive.kill()
        alive.wait()
        for c in (orphan, keep, other):
            try:
                c.remove(force=True)
            except Exception:
                pass


@pytest.mark.slow
def test_builtin_testset_runs_every_modality(wsettings, archive, images, docker_client):
    """A built-in set by name (micro: one case of each of the nine modalities; the demo and PostgreSQL system tests
    run tiny's 27 end to end)."""
    sub_id, rid = _submit(wsettings, "micro", archive, images["correct"], memory_mb=512)
    result = run_sharded(rid, wsettings, docker=docker_client)
    with session_scope(wsettings.database_url) as s:
        sub = s.get(Submission, sub_id)
        assert sub.state == SubmissionState.succeeded, sub.reason
        assert sub.aggregates["ok"] == 9 and len(sub.aggregates["by_modality"]) == 9
        assert 0.3 < sub.dsc < 1
    assert result.requeues == []


def test_gpu_profile_from_shard_caps(tmp_path):
    """A gpu track's caps on a GPU execution host: its own GPUs, memory, pinned cores (the queue-kind refusals of
    ``segarena worker`` are in tests/test_cli_worker.py)."""
    from worker.config import WorkerConfig

    gpu_worker = WorkerConfig(api_url="http://127.0.0.1:9", worker_token="wk_x", broker_url="redis://127.0.0.1:9/0",
                              cache_dir=tmp_path / "cache", worker_gpus="2,3", worker_cpus="0-1")
    caps = dict(gpus=1, memory_mb=8192, cpus=2.0, pids_limit=256, tmpfs_mb=1024, case_timeout_s=60, allow_root=False)
    profile = sb.SandboxProfile.from_caps(caps, gpu_worker)
    assert profile.gpus == ("2",) and profile.memory_bytes == 8 * 1024**3 and profile.pinned_cores() == [0, 1]
    assert profile.memory_text == "8 GiB"
