"""The queue contract: queues are declared once (SEGARENA_QUEUES, name:kind); the API refuses a track on
any other queue; a worker serves the declared queues of its kind and refuses to start on an undeclared
one; workers announce themselves, and ``GET /api/status`` (and ``/status``) shows each queue's length,
workers online and median wait, with a warning per track whose queue nobody serves; a queued
submission shows its position in the workers' fair order and an estimated wait."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.api_helpers import app, auth, client, db_settings, live, submit, world  # noqa: F401 - fixtures
from tests.processes import child_env, log_tail, spawn, stop
from tests.waiting import wait_until
from tests.worker_helpers import ROOT, build_test_image, make_testset, seed_submission, seed_track


# ------------------------------------------------------------------------------------------ settings


def test_queues_are_declared_once_in_settings(monkeypatch):
    from api.settings import Settings, parse_queues

    assert Settings().declared_queues == {"cpu": "cpu", "gpu": "gpu"}
    monkeypatch.setenv("SEGARENA_QUEUES", "cpu:cpu, gpu:gpu, bigmem:cpu, a100:gpu")
    s = Settings()
    assert s.declared_queues == {"cpu": "cpu", "gpu": "gpu", "bigmem": "cpu", "a100": "gpu"}
    assert s.queues == ["cpu", "bigmem"]  # a CPU worker serves every cpu-kind queue by default
    assert s.model_copy(update={"worker_gpus": "0"}).queues == ["gpu", "a100"]
    for bad, says in (("cpu:tpu", "kind is cpu or gpu"), ("Big Mem:cpu", "must match"), ("cpu,cpu", "declared twice"),
                      (" , ", "declares no queue")):
        with pytest.raises(ValueError, match=says):
            parse_queues(bad)
    monkeypatch.setenv("SEGARENA_QUEUES", "cpu:tpu")
    with pytest.raises(ValueError, match="SEGARENA_QUEUES"):
        Settings()  # a wrong declaration stops the process at start-up


# ------------------------------------------------------------------------------------------ the API


def test_undeclared_queue_is_refused_on_create_update_and_apply(client, world, db_settings, live):
    from segarena.admin import apply_challenge
    from segarena.client import CliError, ClientConfig, SegArenaClient

    org = auth(world.token_org)
    track = {"slug": "main", "testset": "tiny"}
    r = client.post("/api/challenges", headers=org, json={"slug": "big", "title": "Big", "demo": True,
                                                          "tracks": [{**track, "queue": "bigmem"}]})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "invalid_request"
    assert "'bigmem' is not a declared queue" in body["message"] and "cpu (cpu), gpu (gpu)" in body["message"]
    assert "SEGARENA_QUEUES" in body["message"]
    assert client.get("/api/challenges/big").status_code == 404  # nothing was made

    r = client.patch(f"/api/challenges/{world.challenge}/tracks/main", headers=org, json={"queue": "bigmem"})
    assert r.status_code == 422 and "SEGARENA_QUEUES" in r.json()["message"], r.text
    assert client.get(f"/api/challenges/{world.challenge}/tracks/main").json()["queue"] == "cpu"

    # `segarena admin apply` goes through the same routes: refused, with the same message
    with SegArenaClient(ClientConfig(url=live.url, token=world.token_org)) as cli, \
            pytest.raises(CliError, match="not a declared queue"):
        apply_challenge(cli, {"slug": "big", "title": "Big", "demo": True, "tracks": [{**track, "queue": "bigmem"}]})

    # declared (the server's setting): accepted; GPUs need a gpu-kind queue
    db_settings.queue_spec = "cpu:cpu,gpu:gpu,bigmem:cpu,a100:gpu"
    r = client.post("/api/challenges", headers=org, json={"slug": "big", "title": "Big", "demo": True,
                                                          "tracks": [{**track, "queue": "bigmem"}]})
    assert r.status_code == 201, r.text
    r = client.patch("/api/challenges/big/tracks/main", headers=org, json={"queue": "bigmem", "gpus": 1})
    assert r.status_code == 422 and "gpu-kind queue" in r.json()["message"] and "a100" in r.json()["message"]
    r = client.patch("/api/challenges/big/tracks/main", headers=org, json={"queue": "a100", "gpus": 1})
    assert r.status_code == 200 and r.json()["queue"] == "a100", r.text


# ------------------------------------------------------------------------------------------ workers


def _worker_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = child_env()
    env.update(SEGARENA_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", **extra)
    return env


def _exec_env(tmp: Path, **extra: str) -> dict[str, str]:
    """An execution host's environment: the three settings (nothing listens on port 9: the refusals come first)."""
    return _worker_env(tmp, SEGARENA_API_URL="http://127.0.0.1:9", SEGARENA_WORKER_TOKEN="sa_worker_test",
                       SEGARENA_BROKER_URL="redis://127.0.0.1:9/0", SEGARENA_CACHE_DIR=str(tmp / "cache"), **extra)


def test_worker_refuses_an_undeclared_queue_or_the_wrong_kind(tmp_path):
    def start(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "segarena.cli", "worker", *args], check=False, cwd=ROOT, capture_output=True,
                              text=True, timeout=120, env=_exec_env(tmp_path / "data", **env))

    undeclared = start("--queues", "cpu,bigmem")
    assert undeclared.returncode == 2, undeclared.stdout + undeclared.stderr
    assert "refusing to start: queue(s) bigmem not declared in SEGARENA_QUEUES (cpu:cpu, gpu:gpu)" in undeclared.stderr
    from_env = start(SEGARENA_WORKER_QUEUES="bigmem")
    assert from_env.returncode == 2 and "bigmem not declared" in from_env.stderr
    cpu_on_gpu = start("--queues", "a100", SEGARENA_QUEUES="cpu:cpu,a100:gpu")
    assert cpu_on_gpu.returncode == 2 and "a gpu-kind queue needs SEGARENA_WORKER_GPUS" in cpu_on_gpu.stderr
    gpu_on_cpu = start("--queues", "bigmem", SEGARENA_QUEUES="bigmem:cpu,a100:gpu", SEGARENA_WORKER_GPUS="0")
    assert gpu_on_cpu.returncode == 2 and "bigmem: a gpu worker serves gpu-kind queues only" in gpu_on_cpu.stderr
    no_kind = start(SEGARENA_QUEUES="a100:gpu")  # a CPU worker, and no cpu-kind queue declared
    assert no_kind.returncode == 2 and "declares no cpu-kind queue" in no_kind.stderr

    # started as the execution host's module (not `segarena worker`): the start-up check stops it too, status 2
    direct = subprocess.run([sys.executable, "-m", "worker.exec_tasks"], check=False, cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env=_exec_env(tmp_path / "data2", SEGARENA_WORKER_QUEUES="bigmem"))
    assert direct.returncode == 2 and "bigmem" in direct.stderr and "not declared" in direct.stderr, \
        direct.stdout + direct.stderr


@pytest.mark.docker
@pytest.mark.slow
def test_custom_declared_queue_is_served_and_status_shows_it(settings, docker_client, base_image, tmp_path):
    """A real execution worker process (``python -m worker.exec_tasks``: the API URL, a worker token, the embedded
    broker; no database) serves a custom cpu-kind queue it was never told about by name, the trusted scorer
    (``segarena scorer``) scores its uploads; /api/status shows it online, then offline with the warning back once
    it stops."""
    from server.app import create_app
    from api.db import session_scope
    from api.execution.identity import create_worker
    from api.execution.shards import enqueue_run_sharded
    from api.models import Run, RunState, Submission, SubmissionState, WorkerNode
    from tests.api_helpers import LiveServer
    from tests.cli_helpers import segarena_cmd

    spec = "cpu:cpu,gpu:gpu,bigmem:cpu"
    settings.queue_spec = spec
    settings.execution = "sharded"
    from api.db import migrate

    migrate(settings.database_url)
    image_id = build_test_image(docker_client, base_image, "correct")
    testset = make_testset(tmp_path / "testset")
    archive = tmp_path / "image.tar"
    archive.write_bytes(b"placeholder: the image is already on the engine")
    with session_scope(settings.database_url) as s:
        track = seed_track(s, testset=str(testset), queue="bigmem")
        sub, run = seed_submission(s, track=track, team_name="custom", image_id=image_id, archive=archive)
        sub_id, run_id, ch = sub.id, run.id, track.challenge.slug
        _, token = create_worker(s, settings, actor=None, name="bigmem-host", queues=["cpu", "bigmem"])

    server = LiveServer(create_app(settings))
    api = httpx.Client(base_url=server.url, timeout=30)
    procs: list[subprocess.Popen] = []
    worker_log = tmp_path / "worker.log"

    def tail() -> str:
        return "worker log tail:\n" + log_tail(worker_log)

    try:
        status = api.get("/api/status").json()
        bigmem = next(q for q in status["queues"] if q["name"] == "bigmem")
        assert bigmem == {**bigmem, "kind": "cpu", "queued": 1, "running": 0, "workers_online": 0}
        assert [(w["challenge"], w["track"], w["queue"]) for w in status["warnings"]] == [(ch, "main", "bigmem")]
        assert "no worker online serves queue 'bigmem'" in status["warnings"][0]["message"]
        page = api.get("/status")
        assert page.status_code == 200 and 'id="queue-bigmem"' in page.text and "no worker online" in page.text

        log, scorer_log = worker_log, tmp_path / "scorer.log"
        trusted = _worker_env(settings.data_dir, SEGARENA_QUEUES=spec, SEGARENA_BASE_IMAGE=base_image,
                              SEGARENA_EXECUTION="sharded", SEGARENA_CONFIG=str(tmp_path / "none.toml"))
        procs.append(spawn(segarena_cmd("scorer"), cwd=ROOT, env=trusted, log=scorer_log))
        env = {k: v for k, v in _worker_env(tmp_path / "nowhere").items() if k != "SEGARENA_DATA_DIR"}
        env.update(SEGARENA_QUEUES=spec, SEGARENA_BASE_IMAGE=base_image, SEGARENA_WORKER_HEARTBEAT_S="1",
                   SEGARENA_API_URL=server.url, SEGARENA_WORKER_TOKEN=token, SEGARENA_BROKER_URL=settings.broker_url,
                   SEGARENA_CACHE_DIR=str(tmp_path / "worker-cache"), SEGARENA_IMAGE_LOCK_DIR=str(tmp_path / "locks"),
                   SEGARENA_CONFIG=str(tmp_path / "none.toml"))
        proc = spawn([sys.executable, "-m", "worker.exec_tasks"], cwd=ROOT, env=env, log=log)
        procs.append(proc)

        def online():
            q = {q["name"]: q for q in api.get("/api/status").json()["queues"]}
            return q["bigmem"]["workers_online"] == 1 and q["cpu"]["workers_online"] == 1

        wait_until(online, 90, "the worker to announce itself", interval=0.2, detail=tail)
        status = api.get("/api/status").json()
        assert status["warnings"] == []
        [worker] = status["workers"]
        assert worker["online"] and worker["kind"] == "cpu" and sorted(worker["queues"]) == ["bigmem", "cpu"]
        assert worker["name"] is None and worker["host"] is None  # anonymous: no host names
        with session_scope(settings.database_url) as s:
            node = s.query(WorkerNode).one()
            assert node.pid == proc.pid and node.cores
            first_seen = node.last_seen_at

        def pinged() -> bool:
            with session_scope(settings.database_url) as s:
                return s.query(WorkerNode).one().last_seen_at > first_seen

        # the worker pings every SEGARENA_WORKER_HEARTBEAT_S=1 s while idle
        wait_until(pinged, 10, "the idle worker's ping to refresh its worker_nodes row", interval=0.2, detail=tail)

        enqueue_run_sharded(settings, run_id)  # what the API does after an upload

        def finished():
            with session_scope(settings.database_url) as s:
                return s.get(Submission, sub_id).state in (SubmissionState.succeeded, SubmissionState.failed)

        wait_until(finished, 180, "the run on queue bigmem to finish", interval=0.2, detail=tail)
        with session_scope(settings.database_url) as s:
            assert s.get(Submission, sub_id).state == SubmissionState.succeeded, s.get(Submission, sub_id).reason
            assert s.get(Run, run_id).state == RunState.succeeded
        bigmem = next(q for q in api.get("/api/status").json()["queues"] if q["name"] == "bigmem")
        assert bigmem["queued"] == 0 and bigmem["waits_sampled"] == 1
        assert bigmem["median_wait_s"] is not None and bigmem["median_run_s"] > 0

        stop(proc)  # SIGTERM: a clean stop marks it offline at once
        status = api.get("/api/status").json()
        assert [w["online"] for w in status["workers"]] == [False]
        assert [w["queue"] for w in status["warnings"]] == ["bigmem"]
    finally:
        stop(*procs)
        api.close()
        server.stop()


# ------------------------------------------------------------------------------------------ positions


@pytest.mark.dialects("sqlite", "postgres")  # the dialect matters here: locks, concurrency
def test_position_and_estimate_follow_the_fair_claim_order(client, world, db_settings, live):
    """Team A ran recently; queued: A's second, B's first, A's third (in that order of arrival). The
    workers' fair claim takes B first, then A's two: the positions say so, the estimate is position ×
    median run / workers online, and three real claims take them in exactly that order."""
    from api.db import session_scope
    from api.models import Run, RunState, Submission, SubmissionState, WorkerNode, utcnow
    from api.execution.identity import create_worker
    from tests.cli_helpers import run_cli

    url = db_settings.database_url
    with session_scope(url) as s:  # an execution host (worker identity) claiming through the worker routes
        _, wtoken = create_worker(s, db_settings, actor=None, name="claimer", queues=["cpu"])
    r = client.post("/api/worker/hello", json={"name": "claimer", "queues": ["cpu"], "calibration_s": 0.6},
                    headers=auth(wtoken))
    assert r.status_code == 200, r.text

    def claim():
        r = client.post("/api/worker/claim", json={"name": "claimer", "queue": "cpu"}, headers=auth(wtoken))
        assert r.status_code in (200, 204), r.text
        return r.json() if r.status_code == 200 else None

    ids = {}
    for name, token in (("a1", world.token_a), ("a2", world.token_a), ("b1", world.token_b), ("a3", world.token_a)):
        r = submit(client, token)
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
        if name == "a1":  # team A's first run really ran: its shard was claimed (the fair claim's memory)
            assert claim()["run_id"] == run_of(url, ids["a1"])
        time.sleep(0.01)  # distinct created_at
    now = utcnow()
    with session_scope(url) as s:  # a1 ran 10 minutes ago for 100 s
        run = s.query(Run).filter(Run.submission_id == ids["a1"]).one()
        run.state, run.started_at, run.finished_at = RunState.succeeded, now - timedelta(minutes=10), now - timedelta(seconds=500)
        s.get(Submission, ids["a1"]).state = SubmissionState.succeeded
        # one worker serves cpu: the claimer (its hello and claims keep it online)

    def view(key, token):
        r = client.get(f"/api/submissions/{ids[key]}", headers=auth(token))
        assert r.status_code == 200, r.text
        return r.json()

    a2, b1, a3 = view("a2", world.token_a), view("b1", world.token_b), view("a3", world.token_a)
    assert [x["queue"]["position"] for x in (b1, a2, a3)] == [1, 2, 3]
    assert b1["queue"] == {**b1["queue"], "queue": "cpu", "queued": 3, "workers_online": 1, "median_run_s": 100.0,
                           "estimate_s": 100.0}
    assert a3["queue"]["estimate_s"] == 300.0 and "median run" in a3["queue"]["how"]
    assert view("a1", world.token_a)["queue"] is None  # not queued: no position

    # the participant's CLI says it
    env = {**child_env(), "SEGARENA_URL": live.url,
           "SEGARENA_TOKEN": world.token_a, "SEGARENA_CONFIG": str(Path(db_settings.data_dir) / "none.toml")}
    shown = run_cli("status", str(ids["a3"]), env=env, check=True).stdout
    assert "queue cpu: position 3 of 3, about 5 min (position 3 × median run 100.0 s / 1 worker online)" in \
        " ".join(shown.split()), shown

    # no worker online: a position, no estimate, and the reason
    with session_scope(url) as s:
        s.query(WorkerNode).one().last_seen_at = now - timedelta(minutes=5)
    q = view("a2", world.token_a)["queue"]
    assert q["position"] == 2 and q["estimate_s"] is None and "no worker online" in q["how"]

    # the workers really claim them in that order: real shard claims (a run counts at its first shard)
    mine = {run_of(url, ids[k]): k for k in ("b1", "a2", "a3")}
    first: list[str] = []
    for _ in range(200):
        spec = claim()
        if spec is None:
            break
        if spec["run_id"] in mine and mine[spec["run_id"]] not in first:
            first.append(mine[spec["run_id"]])
    assert first == ["b1", "a2", "a3"]


def run_of(url: str, submission_id: int) -> int:
    from api.db import session_scope
    from api.models import Run

    with session_scope(url) as s:
        return s.query(Run.id).filter(Run.submission_id == submission_id).scalar()
