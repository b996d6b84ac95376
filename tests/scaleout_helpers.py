"""A scaled-out SegArena on this machine, as real processes (tests/test_scaleout.py, bench/scaleout.py):

* the API: ``uvicorn --factory server.app:create_app`` on 127.0.0.1 (sharded execution);
* the trusted scorer: ``segarena scorer`` (queue ``score`` and the reaper beat), next to the database;
* execution workers: ``segarena worker`` (:func:`worker.exec_tasks.run_execution_worker`), each with its own
  cache dir, pinned with ``taskset`` to its own core (and its containers to it: ``SEGARENA_WORKER_CPUS``), and
  NO database URL or storage setting in their environment: the API URL, a worker token and the broker URL only;
* a private ``redis-server`` as the broker (the ``score`` and ``cpu`` queues are this stack's alone).

The caller seeds the database (challenge, teams, worker token) in-process with :attr:`ScaleStack.settings` and
sends runs with :func:`api.execution.shards.enqueue_run_sharded`, as the API does after an upload.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests import processes
from tests.cli_helpers import ROOT, segarena_cmd
from tests.servers import free_port
from tests.waiting import wait_http, wait_until
from tests.resilience_helpers import PrivateRedis
from tests.processes import child_env

__all__ = ["ScaleStack", "build_delay_image", "run_state", "wait_run", "case_rows", "stack_containers"]

from api.settings import DEFAULT_BASE_IMAGE
BASE_IMAGE = os.environ.get("SEGARENA_BASE_IMAGE", DEFAULT_BASE_IMAGE)


def build_delay_image(client, base_image: str, delay_s: float, *, mode: str = "correct") -> str:
    """The test image of behaviour ``mode`` (tests/behaviours.py: ``correct`` writes a valid prediction, ``noop``
    exits at once without output, ``sleep_forever`` sleeps an hour) whose predict.sh first sleeps ``delay_s``,
    labelled with a fresh salt: returns its (unique) id."""
    from tests.worker_helpers import build_test_image

    return build_test_image(client, base_image, mode, salt=secrets.token_hex(6), DELAY_S=f"{delay_s:g}")


class ScaleStack:
    """API + scorer + N execution workers + a private Redis, as subprocesses sharing one data dir."""

    def __init__(self, tmp: Path, *, database_url: str | None = None, storage_env: dict[str, str] | None = None,
                 shard_heartbeat_s: float = 1.0, heartbeat_timeout_s: int = 6, reaper_interval_s: int = 1,
                 extra_env: dict[str, str] | None = None, docker_host: str | None = None):
        """``docker_host``: the engine the execution workers use (default: DOCKER_HOST or the local socket)."""
        from api.settings import Settings

        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.redis = PrivateRedis(self.tmp / "redis")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = self.tmp / "data"
        self.deployment = "so" + secrets.token_hex(6)
        self.logs = self.tmp / "logs"
        self.logs.mkdir(exist_ok=True)
        base = child_env(drop=("SEGARENA_", "AWS_"))
        base.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT), SEGARENA_BASE_IMAGE=BASE_IMAGE)
        self.base_env = base
        self.trusted_env = {**base, "SEGARENA_DATA_DIR": str(self.data_dir), "SEGARENA_BROKER_URL": self.redis.url,
                            "SEGARENA_EXECUTION": "sharded", "SEGARENA_QUEUES": "cpu:cpu,gpu:gpu",
                            "SEGARENA_SHARD_HEARTBEAT_S": str(shard_heartbeat_s),
                            "SEGARENA_HEARTBEAT_TIMEOUT_S": str(heartbeat_timeout_s),
                            "SEGARENA_REAPER_INTERVAL_S": str(reaper_interval_s),
                            "SEGARENA_CONFIG": str(self.tmp / "none.toml"), **(storage_env or {}), **(extra_env or {})}
        if database_url:
            self.trusted_env["SEGARENA_DATABASE_URL"] = database_url
        kw: dict[str, Any] = dict(data_dir=self.data_dir, base_image=BASE_IMAGE, broker_url=self.redis.url,
                                  execution="sharded", shard_heartbeat_s=shard_heartbeat_s,
                                  heartbeat_timeout_s=heartbeat_timeout_s, reaper_interval_s=reaper_interval_s)
        if database_url:
            kw["database_url"] = database_url
        self.settings = Settings(**kw)
        for key, value in (storage_env or {}).items():  # the same storage as the API and the scorer
            field = key.removeprefix("SEGARENA_").lower()
            if field in Settings.model_fields:
                setattr(self.settings, field, value if "secret" not in field else _secret(value))
        self.settings.ensure_dirs()
        from api.db import migrate

        migrate(self.settings.database_url)
        self.procs: dict[str, subprocess.Popen] = {}
        self.worker_token = ""
        self.docker_host = docker_host

    # -- processes ---------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        proc = processes.spawn(argv, env=env, log=self.logs / f"{name}.log", cwd=self.tmp)
        self.procs[name] = proc
        return proc

    def start_trusted(self) -> ScaleStack:
        api = self._spawn("api", [sys.executable, "-m", "uvicorn", "--factory", "server.app:create_app", "--host",
                                  "127.0.0.1", "--port", str(self.port), "--log-level", "warning"], self.trusted_env)
        self._spawn("scorer", segarena_cmd("scorer"), self.trusted_env)
        wait_http(f"{self.url}/health", 90, proc=api)
        return self

    def worker_env(self, name: str, cpus: str | None) -> dict[str, str]:
        """The three settings, plus the queues, a cache of its own, its core and the container label."""
        env = {**self.base_env, "SEGARENA_API_URL": self.url, "SEGARENA_WORKER_TOKEN": self.worker_token,
               "SEGARENA_BROKER_URL": self.redis.url, "SEGARENA_QUEUES": "cpu:cpu,gpu:gpu",
               "SEGARENA_WORKER_QUEUES": "cpu", "SEGARENA_WORKER_NAME": name,
               "SEGARENA_CACHE_DIR": str(self.tmp / f"cache-{name}"),
               "SEGARENA_IMAGE_LOCK_DIR": str(self.tmp / "image-locks"), "SEGARENA_DEPLOYMENT_ID": self.deployment,
               "SEGARENA_WORKER_HEARTBEAT_S": "2", "SEGARENA_HTTP_BACKOFF_S": "0.2"}
        if cpus is not None:
            env["SEGARENA_WORKER_CPUS"] = cpus
        if self.docker_host:
            env["SEGARENA_DOCKER_HOST"] = self.docker_host
        return env

    def start_worker(self, name: str, cpus: str | None = None) -> subprocess.Popen:
        env = self.worker_env(name, cpus)
        assert not any(k in env for k in ("SEGARENA_DATABASE_URL", "SEGARENA_STORAGE_URL", "SEGARENA_DATA_DIR"))
        argv = segarena_cmd("worker")  # the execution host (worker/exec_tasks.run_execution_worker)
        if cpus is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", cpus, *argv]
        return self._spawn(name, argv, env)

    def wait_workers(self, names: list[str], timeout: float = 90) -> None:
        """Until each named worker said hello and its Celery consumer is ready (its log says so)."""
        def ready() -> bool:
            for n in names:
                assert self.procs[n].poll() is None, f"worker {n} exited\n{self.log_tail()}"
            return all(" ready." in (self.logs / f"{n}.log").read_text(errors="replace") for n in names)

        wait_until(ready, timeout, f"workers {', '.join(names)} to be ready", interval=0.2, detail=self.log_tail)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        processes.kill(self.procs[name], sig)

    def stop(self) -> None:
        processes.stop(*reversed(list(self.procs.values())))
        self.redis.stop()

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-chars:]}" for p in sorted(self.logs.iterdir()))

    # -- seeding -----------------------------------------------------------------------------------
    def create_worker_token(self, name: str = "exec-hosts") -> str:
        from api.db import session_scope
        from api.execution.identity import create_worker

        with session_scope(self.settings.database_url) as s:
            _, self.worker_token = create_worker(s, self.settings, actor=None, name=name, queues=["cpu"])
        return self.worker_token

    def submit(self, track_id: int, team: str, image: dict[str, Any]) -> tuple[int, int]:
        """A queued submission of ``image`` ({image_id, path, sha256, bytes}: a thin archive) by ``team``, split and
        sent as the API does after an upload; returns (submission id, run id)."""
        from api.db import session_scope
        from api.execution.shards import enqueue_run_sharded
        from api.models import Track
        from tests.worker_helpers import seed_submission

        with session_scope(self.settings.database_url) as s:
            sub, run = seed_submission(s, track=s.get(Track, track_id), team_name=team, image_id=image["image_id"],
                                       archive=Path(image["path"]))
            sub.archive_sha256, sub.archive_bytes = image["sha256"], image["bytes"]
            if "key" in image:
                sub.archive_path = image["key"]
            sub_id, run_id = sub.id, run.id
        enqueue_run_sharded(self.settings, run_id)
        return sub_id, run_id


def _secret(value: str):
    from pydantic import SecretStr

    return SecretStr(value)


def run_state(settings, run_id: int) -> str:
    from api.db import session_scope
    from api.models import Run

    with session_scope(settings.database_url) as s:
        return s.get(Run, run_id).state.value


def wait_run(stack: ScaleStack, run_id: int, timeout: float = 300, interval: float = 0.3) -> str:
    def final() -> str | None:
        state = run_state(stack.settings, run_id)
        return state if state in ("succeeded", "failed", "cancelled") else None

    return wait_until(final, timeout, f"run {run_id} to finish", interval=interval,
                      detail=lambda: f"run {run_id} still {run_state(stack.settings, run_id)}\n{stack.log_tail()}")


def case_rows(settings, run_id: int) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from api.db import session_scope
    from api.models import CaseResult

    with session_scope(settings.database_url) as s:
        return [dict(case=r.case_id, status=r.status.value, dsc=r.dsc, nsd=r.nsd, worker=r.worker_name,
                     shard=r.shard_id, wall_s=r.wall_s, runtime_s=r.runtime_s, created_at=r.created_at,
                     scored=r.scored)
                for r in s.scalars(select(CaseResult).where(CaseResult.run_id == run_id).order_by(CaseResult.id))]


def stack_containers(client, stack: ScaleStack, run_id: int | None = None) -> list[dict[str, Any]]:
    """This stack's containers (any state), optionally of one run."""
    labels = [f"segarena.deployment={stack.deployment}"] + ([f"segarena.run={run_id}"] if run_id is not None else [])
    return client.api.containers(all=True, filters={"label": labels})
