"""The end-to-end stack of the system tests (tests/system/test_e2e.py, tests/system/test_demo.py): ``segarena serve``,
``segarena scorer`` and ``segarena worker`` as subprocesses, each with the environment a deployment gives it."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import httpx

from tests.cli_helpers import ROOT, free_port, segarena_cmd, wait_http
from tests.processes import child_env, spawn, stop

RUN_TIMEOUT_S = 420  # the tiny set (27 cases) takes about 30 s; generous for a loaded CI machine


class Stack:
    """``segarena serve`` + ``segarena scorer`` (the trusted side, one environment) + ``segarena worker`` (the
    execution host: its own environment of three settings, its queue and a cache dir) as subprocesses."""

    def __init__(self, tmp: Path, extra_env: dict[str, str], *, workers: int = 1):
        self.workers = workers  # execution workers; more than one: each pinned to its own core, own cache dir
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = "sa_e2e_" + secrets.token_hex(16)
        self.data_dir = tmp / "data"
        self.queue = "e2e" + secrets.token_hex(4)  # a queue of our own: no other worker takes our runs
        self.env = child_env()
        self.env.update({
            "SEGARENA_DATA_DIR": str(self.data_dir), "SEGARENA_BOOTSTRAP_ORGANIZER_TOKEN": self.token,
            "SEGARENA_WORKER_QUEUES": self.queue, "SEGARENA_QUEUES": f"cpu:cpu,gpu:gpu,{self.queue}:cpu",
            "SEGARENA_PUBLIC_BASE_URL": self.url,
            "SEGARENA_URL": self.url, "SEGARENA_CACHE_DIR": str(tmp / "cache"),
            "SEGARENA_KEEP_CASE_OUTPUTS": "1",  # the scenario re-scores the outputs with `segarena score`
            "SEGARENA_CONFIG": str(tmp / "none.toml"), **extra_env})
        from api.deps import new_token
        from api.settings import Settings

        self.env["SEGARENA_BOOTSTRAP_WORKER_TOKEN"] = new_token()
        broker = self.env.get("SEGARENA_BROKER_URL") or Settings(data_dir=self.data_dir).broker_url
        # the execution host: no database URL, no storage setting (it reaches them through the API only)
        self.worker_env = {k: v for k, v in self.env.items()
                           if k not in {"SEGARENA_DATABASE_URL", "SEGARENA_STORAGE_URL", "SEGARENA_STORAGE_DIR",
                                        "SEGARENA_DATA_DIR", "SEGARENA_BOOTSTRAP_ORGANIZER_TOKEN",
                                        "SEGARENA_BOOTSTRAP_WORKER_TOKEN"}}
        self.worker_env.update({"SEGARENA_API_URL": self.url, "SEGARENA_BROKER_URL": broker,
                                "SEGARENA_WORKER_TOKEN": self.env["SEGARENA_BOOTSTRAP_WORKER_TOKEN"],
                                "SEGARENA_IMAGE_LOCK_DIR": str(tmp / "image-locks")})
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        proc = spawn(segarena_cmd(*args), env=env, log=self.logs / f"{name}.log", cwd=ROOT)
        self.procs.append((name, proc))
        return proc

    def start(self) -> Stack:
        serve = self._spawn("serve", ["serve", "--port", str(self.port)], self.env)
        self._spawn("scorer", ["scorer"], self.env)
        wait_http(f"{self.url}/health", 90, proc=serve)
        if self.workers == 1:
            self._spawn("worker", ["worker"], self.worker_env)  # says hello to the API: started once it answers
            return self
        cores = os.cpu_count() or 1
        for i in range(self.workers):  # hosts of one queue: any of them takes any shard of a run
            self._spawn(f"worker{i + 1}", ["worker"], {**self.worker_env, "SEGARENA_WORKER_CPUS": str(i % cores),
                                                       "SEGARENA_CACHE_DIR": str(self.tmp / f"cache{i + 1}")})
        return self

    def stop(self) -> None:
        stop(*(proc for _name, proc in reversed(self.procs)))  # the workers first, then the scorer and the API

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(self.logs.iterdir()))

    def org(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60)
