"""The execution host's Celery consumer (worker/exec_tasks.py) as a real worker process on Redis, with
the real sandbox, against a real local HTTP server implementing the worker routes."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.exec_helpers import (TOKEN, clean_env, exec_image, fake_api, image_spec, remove_image,  # noqa: F401
                                write_case)
from tests.processes import child_env, log_tail, spawn, stop
from tests.waiting import wait_until
from tests.worker_helpers import ROOT


def _env(fake_api, redis_url, tmp_path, queue: str, **extra) -> dict:
    env = child_env()
    env.update(SEGARENA_API_URL=fake_api.url, SEGARENA_WORKER_TOKEN=TOKEN, SEGARENA_BROKER_URL=redis_url,
               SEGARENA_QUEUES=f"{queue}:cpu", SEGARENA_CACHE_DIR=str(tmp_path / "cache"),
               SEGARENA_IMAGE_LOCK_DIR=str(tmp_path / "locks"), SEGARENA_WORKER_NAME=f"w-{queue}",
               SEGARENA_HTTP_BACKOFF_S="0.1", PYTHONUNBUFFERED="1", **extra)
    return env


def _start(env: dict, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "worker.log"
    return spawn([sys.executable, "-m", "worker.exec_tasks"], cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
                 log=log), log


def _stop(proc: subprocess.Popen, log: Path) -> str:
    """SIGTERM (then SIGKILL), and the worker's whole log."""
    stop(proc)
    return log.read_text(encoding="utf-8", errors="replace")


def _drop_queue(redis_url: str, queue: str) -> None:
    import redis

    r = redis.Redis.from_url(redis_url)
    r.delete(queue)
    r.close()


def test_a_worker_process_says_hello_runs_a_shard_and_treats_a_spare_message_as_a_no_op(
        fake_api, redis_url, exec_image, docker_client, tmp_path, clean_env):
    from worker.config import WorkerConfig
    from worker.exec_tasks import SHARD_TASK, make_exec_celery

    queue = "t" + uuid.uuid4().hex[:10]
    fake_api.allowed_queues = (queue,)
    env = _env(fake_api, redis_url, tmp_path, queue)
    proc, log = _start(env, tmp_path)
    sender = make_exec_celery(WorkerConfig(api_url=fake_api.url, worker_token=TOKEN, broker_url=redis_url,
                                           queue_spec=f"{queue}:cpu", cache_dir=tmp_path / "sender"))
    try:
        wait_until(lambda: fake_api.hellos, 60, "the worker's hello", proc=proc, detail=lambda: log_tail(log))
        [hello] = fake_api.hellos
        assert hello["name"] == f"w-{queue}" and hello["queues"] == [queue]
        assert hello["pid"] == proc.pid and hello["cores"] >= 1 and hello["cpu_model"]
        assert hello["docker_version"] and 0.05 < hello["calibration_s"] < 30
        assert hello["gpu_model"] == ""  # no GPU on this host (or none owned)

        remove_image(docker_client, exec_image["image_id"])
        fake_api.add_image(exec_image["path"], exec_image["sha256"])
        cases = [(c, write_case(tmp_path / "in", c)) for c in ("2DBox_US_0001", "2DBox_US_0002")]
        sid = fake_api.add_shard(image=image_spec(exec_image), cases=cases, queue=queue)
        with sender.connection_for_write() as conn:
            sender.send_task(SHARD_TASK, args=[sid], queue=queue, connection=conn)
        wait_until(lambda: fake_api.shards[sid].finished, 120, f"shard {sid} to finish", detail=lambda: log_tail(log))
        assert fake_api.shards[sid].finished[0]["outcome"] == "done"
        assert [u["meta"]["status"] for u in fake_api.uploads_of(sid)] == ["ok", "ok"]

        # a spare message (its shard was taken by someone else): the claim answers 204, nothing runs
        claims = fake_api.requests.count(("POST", "claim"))
        with sender.connection_for_write() as conn:
            sender.send_task(SHARD_TASK, args=[sid], queue=queue, connection=conn)
        wait_until(lambda: fake_api.requests.count(("POST", "claim")) == claims + 1, 30,
                   "the spare message's claim", detail=lambda: log_tail(log))
        time.sleep(0.5)  # the point: time for anything the spare message wrongly started to show up
        assert proc.poll() is None and len(fake_api.uploads_of(sid)) == 2
    finally:
        out = _stop(proc, log)
        _drop_queue(redis_url, queue)
        sender.close()
    assert "nothing to claim" in out, out[-3000:]


def test_a_worker_the_api_refuses_exits_with_status_2(fake_api, redis_url, tmp_path, clean_env):
    queue = "t" + uuid.uuid4().hex[:10]
    fake_api.allowed_queues = ("cpu",)  # the token may not serve this queue: hello answers 403
    proc, log = _start(_env(fake_api, redis_url, tmp_path, queue, SEGARENA_CALIBRATE="false"), tmp_path)
    try:
        proc.wait(timeout=60)
    finally:
        out = _stop(proc, log)
    assert proc.returncode == 2, out[-3000:]
    assert "refusing to start" in out and f"may not serve {queue}" in out


@pytest.mark.parametrize("env_extra, message", [
    ({"SEGARENA_WORKER_QUEUES": "nope"}, "not declared in SEGARENA_QUEUES"),
    ({"SEGARENA_WORKER_TOKEN": ""}, "SEGARENA_WORKER_TOKEN"),
])
def test_a_misconfigured_worker_refuses_to_start(env_extra, message, fake_api, redis_url, tmp_path, clean_env):
    queue = "t" + uuid.uuid4().hex[:10]
    env = _env(fake_api, redis_url, tmp_path, queue, SEGARENA_CALIBRATE="false")
    env.update(env_extra)
    proc, log = _start(env, tmp_path)
    try:
        proc.wait(timeout=60)
    finally:
        out = _stop(proc, log)
    assert proc.returncode == 2 and message in out, out[-3000:]
    assert fake_api.hellos == []
