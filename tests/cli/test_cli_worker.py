"""``segarena worker`` is the execution host (worker/exec_tasks.py): it needs the API URL, a worker token and the
broker URL, says which one is missing and how to get a token, and refuses queues it may not serve; all before
touching Docker, the broker or the API (exit status 2, one line, no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _worker(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SEGARENA_")}
    return subprocess.run([sys.executable, "-m", "segarena.cli", "worker", *args], check=False, cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def test_missing_settings_are_named_with_how_to_get_a_token():
    r = _worker()
    assert r.returncode == 2, r
    err = r.stderr.strip()
    assert err.startswith("segarena worker: refusing to start:") and "Traceback" not in err
    for var in ("SEGARENA_API_URL", "SEGARENA_WORKER_TOKEN", "SEGARENA_BROKER_URL"):
        assert f"{var} is not set" in err
    assert "segarena admin worker create NAME --queue cpu" in err
    r = _worker(SEGARENA_API_URL="http://127.0.0.1:9", SEGARENA_BROKER_URL="redis://127.0.0.1:9/0")
    assert r.returncode == 2 and "SEGARENA_WORKER_TOKEN is not set" in r.stderr \
        and "SEGARENA_API_URL is not set" not in r.stderr


def test_an_undeclared_queue_or_the_wrong_kind_is_refused():
    env = dict(SEGARENA_API_URL="http://127.0.0.1:9", SEGARENA_BROKER_URL="redis://127.0.0.1:9/0",
               SEGARENA_WORKER_TOKEN="sa_worker_test")
    r = _worker("--queues", "bigmem", **env)
    assert r.returncode == 2 and "bigmem" in r.stderr and "not declared in SEGARENA_QUEUES" in r.stderr, r.stderr
    r = _worker("--queues", "gpu", **env)
    assert r.returncode == 2 and "SEGARENA_WORKER_GPUS" in r.stderr, r.stderr
    r = _worker(**{**env, "SEGARENA_API_URL": "ftp://x"})
    assert r.returncode == 2 and "SEGARENA_API_URL must be an http(s) URL" in r.stderr, r.stderr
