"""The runner and the reaper as plain Python against real SQLite and a real Docker engine."""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from api.db import migrate, session_scope
from api.models import AuditEvent, CaseResult, CaseStatus, Run, RunState, Submission, SubmissionState, utcnow
from tests.worker_helpers import build_test_image, make_testset, seed_submission, seed_track, segarena_containers
from worker import sandbox as sb
from worker.reaper import reap
from worker.runner import backoff_s, claim_run
from worker.tasks import execute_run

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def images(docker_client, base_image):
    return {n: build_test_image(docker_client, base_image, n) for n in ("correct", "crash", "sleep")}


@pytest.fixture
def wsettings(settings):
    s = settings.model_copy(update={"heartbeat_timeout_s": 30, "max_attempts": 3})
    migrate(s.database_url)
    return s


@pytest.fixture
def testset(tmp_path):
    return str(make_testset(tmp_path / "testset"))


@pytest.fixture
def archive(tmp_path):
    # the images are present on the engine already, so the runner never needs to load this file
    p = tmp_path / "image.tar"
    p.write_bytes(b"placeholder")
    return p


class Sent(list):
    def __call__(self, run_id, queue, countdown):
        self.append((run_id, queue, countdown))


def _submit(s, wsettings, testset, archive, image_id, team="team-a", **track_fields):
    track = seed_track(s, testset=testset, slug=f"t{os.urandom(3).hex()}", **track_fields)
    return seed_submission(s, track=track, team_name=team, image_id=image_id, archive=archive)


def test_run_succeeds_with_case_results_and_audit(wsettings, testset, archive, images, docker_client):
    with session_scope(wsettings.database_url) as s:
        sub, run = _submit(s, wsettings, testset, archive, images["correct"])
        sub_id, run_id = sub.id, run.id
    assert execute_run(run_id, wsettings, client=docker_client, sender=Sent()) == run_id
    with session_scope(wsettings.database_url) as s:
        run, sub = s.get(Run, run_id), s.get(Submission, sub_id)
        assert run.state == RunState.succeeded and sub.state == SubmissionState.succeeded, (run.reason, sub.reason)
        cases = s.execute(select(CaseResult).where(CaseResult.run_id == run_id)).scalars().all()
        assert sorted(c.case_id for c in cases) == ["2DBox_US_0000", "2DBox_US_0001", "3DBox_CT_0000"]
        assert all(c.status == CaseStatus.ok and 0 < c.dsc <= 1 and c.runtime_s > 0 for c in cases)
        assert all("uid=1000" in c.stdout_tail for c in cases)
        assert sub.dsc == pytest.approx(sum(c.dsc for c in cases) / 3)
        assert sub.runtime_s == pytest.approx(sum(c.runtime_s for c in cases) / 3)
        assert sub.summary["ok"] == 3 and set(sub.summary["by_modality"]) == {"US", "CT"}
        assert sub.metric_profile == "default" and sub.finished_at is not None
        # audit fields of the run
        assert run.worker_host == socket.gethostname() and run.worker_pid == os.getpid()
        assert run.docker_version and run.cpu_model and run.cpuset
        assert run.container_params["network_mode"] == "none" and run.container_params["cap_drop"] == ["ALL"]
        assert run.container_params["cpuset_cpus"] == run.cpuset
        assert run.started_at and run.finished_at and run.heartbeat_at and run.cases_total == 3
        actions = [e.action for e in s.execute(select(AuditEvent).where(AuditEvent.target_type == "run",
                                                                         AuditEvent.target_id == str(run_id))
                                               .order_by(AuditEvent.id)).scalars()]
        assert actions == ["run.loading", "run.running", "run.scoring", "run.succeeded"]
    dep = sb.deployment_id(wsettings)
    assert [c for c in segarena_containers(docker_client) if c["Labels"].get(sb.LABEL_DEPLOYMENT) == dep] == []


def test_participant_failure_is_final_and_worker_keeps_serving(wsettings, testset, archive, images, docker_client):
    sent = Sent()
    with session_scope(wsettings.database_url) as s:
        bad, bad_run = _submit(s, wsettings, testset, archive, images["crash"], team="team-crash")
        ids = (bad.id, bad_run.id)
    assert execute_run(ids[1], wsettings, client=docker_client, sender=sent) == ids[1]
    with session_scope(wsettings.database_url) as s:
        run, sub = s.get(Run, ids[1]), s.get(Submission, ids[0])
        assert run.state == RunState.failed and sub.state == SubmissionState.failed
        assert sub.reason.startswith("every case failed; first: case 2DBox_US_0000: predict.sh exited with code 1")
        cases = s.execute(select(CaseResult).where(CaseResult.run_id == ids[1])).scalars().all()
        assert len(cases) == 3 and all(c.status == CaseStatus.crash and c.dsc == 0 and c.nsd == 0 for c in cases)
        assert all(c.runtime_s == 30 for c in cases)  # worst value: the case time limit
        assert "model weights not found" in cases[0].stderr_tail
        assert sub.dsc == 0 and sub.runtime_s == 30
    assert sent == []  # participant failures are not retried
    with session_scope(wsettings.database_url) as s:
        good, good_run = _submit(s, wsettings, testset, archive, images["correct"], team="team-good")
        gid = good_run.id
    assert execute_run(gid, wsettings, client=docker_client, sender=sent) == gid
    with session_scope(wsettings.database_url) as s:
        assert s.get(Run, gid).state == RunState.succeeded


def test_timeout_case_scores_worst_and_run_goes_on(wsettings, testset, archive, images, docker_client, tmp_path):
    one = make_testset(tmp_path / "one", n2d=1, n3d=0)
    with session_scope(wsettings.database_url) as s:
        sub, run = _submit(s, wsettings, str(one), archive, images["sleep"], case_timeout_s=1)
        rid = run.id
    execute_run(rid, wsettings, client=docker_client, sender=Sent())
    with session_scope(wsettings.database_url) as s:
        case = s.execute(select(CaseResult).where(CaseResult.run_id == rid)).scalar_one()
        assert case.status == CaseStatus.timeout and case.runtime_s == 1
        assert case.reason.startswith("case 2DBox_US_0000: time limit exceeded (1 s)")
        assert s.get(Run, rid).state == RunState.failed


def test_redelivery_never_double_counts(wsettings, testset, archive, images, docker_client):
    with session_scope(wsettings.database_url) as s:
        sub, run = _submit(s, wsettings, testset, archive, images["correct"])
        rid = run.id
        # a case recorded by an earlier delivery of this run
        s.add(CaseResult(run_id=rid, case_id="2DBox_US_0001", status=CaseStatus.ok, dsc=0.5, nsd=0.5, runtime_s=1.0,
                         modality="US"))
    assert execute_run(rid, wsettings, client=docker_client, sender=Sent()) == rid
    assert execute_run(rid, wsettings, client=docker_client, sender=Sent()) is None  # redelivered: nothing to do
    with session_scope(wsettings.database_url) as s:
        cases = s.execute(select(CaseResult).where(CaseResult.run_id == rid)).scalars().all()
        assert len(cases) == 3
        kept = next(c for c in cases if c.case_id == "2DBox_US_0001")
        assert kept.dsc == 0.5 and kept.stdout_tail == ""  # not re-run
        assert s.get(Run, rid).state == RunState.succeeded


def test_fair_claim_interleaves_teams_and_is_atomic(wsettings, testset, archive):
    t0 = utcnow() - timedelta(minutes=10)
    names = {}
    with session_scope(wsettings.database_url) as s:
        track = seed_track(s, testset=testset)
        for i, (team, label) in enumerate([("A", "a1"), ("A", "a2"), ("A", "a3"), ("B", "b1"), ("C", "c1")]):
            _, run = seed_submission(s, track=track, team_name=team, image_id="sha256:x", archive=archive,
                                     created_at=t0 + timedelta(seconds=i))
            names[run.id] = label
    order = []
    for k in range(6):
        rid = claim_run(wsettings, queue="cpu", worker="h:1", now=utcnow() + timedelta(seconds=k))
        order.append(names.get(rid))
    assert order == ["a1", "b1", "c1", "a2", "a3", None]

    # atomic: eight racing claimers take five runs exactly once
    with session_scope(wsettings.database_url) as s:
        track = seed_track(s, testset=testset, slug="race")
        for i in range(5):
            seed_submission(s, track=track, team_name=f"R{i}", image_id="sha256:x", archive=archive,
                            created_at=t0)
    got, barrier = [], threading.Barrier(8)

    def claimer():
        barrier.wait()
        got.append(claim_run(wsettings, queue="cpu", worker="h:2"))

    threads = [threading.Thread(target=claimer) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    claimed = [g for g in got if g is not None]
    assert len(claimed) == len(set(claimed)) == 5


def test_infra_failure_retries_with_backoff_then_fails(wsettings, testset, archive, images):
    broken = wsettings.model_copy(update={"docker_host": "unix:///nonexistent/docker.sock"})
    sent = Sent()
    with session_scope(wsettings.database_url) as s:
        sub, run = _submit(s, wsettings, testset, archive, images["correct"])
        sub_id, rid = sub.id, run.id
    for attempt in (1, 2, 3):
        assert execute_run(rid, broken, sender=sent) == rid
        with session_scope(wsettings.database_url) as s:
            run = s.get(Run, rid)
            assert run.state == RunState.infra_failed and "Docker engine" in run.reason
            assert run.attempt == attempt
            runs = s.execute(select(Run).where(Run.submission_id == sub_id).order_by(Run.attempt)).scalars().all()
            sub = s.get(Submission, sub_id)
            if attempt < 3:
                new = runs[-1]
                assert new.attempt == attempt + 1 and new.state == RunState.queued
                assert sent[-1] == (new.id, "cpu", backoff_s(wsettings, attempt + 1))
                assert sub.state == SubmissionState.queued and f"attempt {attempt + 1} of 3" in sub.reason
                # not eligible before its backoff
                assert claim_run(wsettings, queue="cpu", worker="h:1") is None
                new.created_at = utcnow() - timedelta(seconds=backoff_s(wsettings, attempt + 1) + 1)
                rid = new.id
            else:
                assert len(runs) == 3 and sub.state == SubmissionState.failed
                assert sub.reason.startswith("infrastructure failure on all 3 attempts")
    assert len(sent) == 2


def test_cancel_between_cases(wsettings, testset, archive, images, docker_client):
    with session_scope(wsettings.database_url) as s:
        sub, run = _submit(s, wsettings, testset, archive, images["correct"])
        sub_id, rid = sub.id, run.id
    done = threading.Event()

    def cancel_after_first_case():
        while not done.is_set():
            with session_scope(wsettings.database_url) as s:
                if s.execute(select(func.count()).select_from(CaseResult).where(CaseResult.run_id == rid)).scalar_one():
                    s.get(Submission, sub_id).state = SubmissionState.cancelled
                    return
            time.sleep(0.02)

    t = threading.Thread(target=cancel_after_first_case)
    t.start()
    try:
        execute_run(rid, wsettings, client=docker_client, sender=Sent())
    finally:
        done.set()
        t.join()
    with session_scope(wsettings.database_url) as s:
        assert s.get(Run, rid).state == RunState.cancelled
        assert s.get(Submission, sub_id).state == SubmissionState.cancelled
        n = s.execute(select(func.count()).select_from(CaseResult).where(CaseResult.run_id == rid)).scalar_one()
        assert 1 <= n < 3

    # a run whose submission was cancelled while queued is never started
    with session_scope(wsettings.database_url) as s:
        sub, run = _submit(s, wsettings, testset, archive, images["correct"])
        sub.state = SubmissionState.cancelled
        rid2 = run.id
    assert execute_run(rid2, wsettings, client=docker_client, sender=Sent()) is None
    with session_scope(wsettings.database_url) as s:
        assert s.get(Run, rid2).state == RunState.cancelled and s.get(Run, rid2).started_at is None


def _dead_pid() -> int:
    import subprocess

    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_reaper_requeues_lost_runs_resends_stuck_ones_and_removes_orphans(wsettings, testset, archive, images,
                                                                            docker_client, base_image):
    host = socket.gethostname()
    dead = _dead_pid()
    old = utcnow() - timedelta(seconds=wsettings.heartbeat_timeout_s + 5)
    with session_scope(wsettings.database_url) as s:
        track = seed_track(s, testset=testset)
        lost_sub, lost = seed_submission(s, track=track, team_name="L", image_id="sha256:x", archive=archive)
        lost.state, lost.started_at, lost.heartbeat_at = RunState.running, old, old
        lost.worker_host, lost.worker_pid = host, dead
        lost_sub.state = SubmissionState.running
        _, alive = seed_submission(s, track=track, team_name="H", image_id="sha256:x", archive=archive)
        alive.state, alive.started_at, alive.heartbeat_at = RunState.running, utcnow(), utcnow()
        alive.worker_host, alive.worker_pid = host, os.getpid()
        _, stuck = seed_submission(s, track=track, team_name="S", image_id="sha256:x", archive=archive,
                                   created_at=utcnow() - timedelta(seconds=wsettings.heartbeat_timeout_s + 5))
        ids = dict(lost=lost.id, alive=alive.id, stuck=stuck.id, lost_sub=lost_sub.id)
    mk = lambda rid, pid: docker_client.containers.create(  # noqa: E731
        base_image, ["sleep", "60"], network_mode="none",
        labels={sb.LABEL_RUN: str(rid), sb.LABEL_CASE: "c", sb.LABEL_WORKER: f"{host}:{pid}",
                sb.LABEL_DEPLOYMENT: sb.deployment_id(wsettings)})
    orphan, keep = mk(ids["lost"], dead), mk(ids["alive"], os.getpid())
    try:
        sent = Sent()
        report = reap(wsettings, client=docker_client, sender=sent)
        assert report.lost == [ids["lost"]] and len(report.requeued) == 1
        assert report.resent == [ids["stuck"]]
        assert report.containers_removed == [orphan.id]  # not the live run's, nor other deployments'
        assert keep.id in [c["Id"] for c in segarena_containers(docker_client)]
        assert sorted(sent) == sorted([(report.requeued[0], "cpu", backoff_s(wsettings, 2)), (ids["stuck"], "cpu", 0.0)])
        with session_scope(wsettings.database_url) as s:
            assert s.get(Run, ids["lost"]).state == RunState.infra_failed
            assert s.get(Run, ids["lost"]).reason.startswith(f"worker lost: {host}:{dead} sent no heartbeat")
            new = s.get(Run, report.requeued[0])
            assert new.attempt == 2 and new.state == RunState.queued and new.submission_id == ids["lost_sub"]
            assert s.get(Run, ids["alive"]).state == RunState.running
        again = reap(wsettings, client=docker_client, sender=sent)
        assert again.lost == [] and again.resent == [] and len(sent) == 2  # no second message within the limit
    finally:
        for c in (orphan, keep):
            try:
                c.remove(force=True)
            except Exception:  # noqa: BLE001
                pass


@pytest.mark.slow
def test_builtin_tiny_testset(wsettings, archive, images, docker_client):
    with session_scope(wsettings.database_url) as s:
        sub, run = _submit(s, wsettings, "tiny", archive, images["correct"], memory_mb=512)
        sub_id, rid = sub.id, run.id
    execute_run(rid, wsettings, client=docker_client, sender=Sent())
    with session_scope(wsettings.database_url) as s:
        sub = s.get(Submission, sub_id)
        assert sub.state == SubmissionState.succeeded, sub.reason
        assert sub.summary["ok"] == 27 and len(sub.summary["by_modality"]) == 9
        assert 0.3 < sub.dsc < 1


def test_queue_rules_and_gpu_profile(wsettings):
    import types

    from worker.celery_app import check_worker_queues

    check_worker_queues(wsettings, ["cpu"])
    with pytest.raises(RuntimeError, match="needs a worker that owns GPUs"):
        check_worker_queues(wsettings, ["gpu"])
    gpu_worker = wsettings.model_copy(update={"worker_gpus": "2,3", "worker_cpus": "0-1"})
    check_worker_queues(gpu_worker, ["gpu"])
    with pytest.raises(RuntimeError, match="serves gpu-kind queues only"):
        check_worker_queues(gpu_worker, ["cpu", "gpu"])
    track = types.SimpleNamespace(gpus=1, memory_mb=8192, cpus=2.0, pids_limit=256, tmpfs_mb=1024, case_timeout_s=60,
                                  allow_root=False)
    profile = sb.SandboxProfile.from_track(track, gpu_worker)
    assert profile.gpus == ("2",) and profile.memory_bytes == 8 * 1024**3 and profile.pinned_cores() == [0, 1]
    assert profile.memory_text == "8 GiB"
