"""Shared fixtures: the real services (Docker engine, Redis, PostgreSQL) and fresh settings.

A missing service skips its tests on a developer machine but FAILS them under ``CI=true``:
CI must never pass by skipping what it is meant to check. ``./segarena.sh test`` starts them all.
"""

from __future__ import annotations

import os
import secrets
import uuid
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = os.environ.get("SEGARENA_BASE_IMAGE", "segarena/base:bookworm")
PG_PORT = int(os.environ.get("SEGARENA_PG_PORT", "5432"))
REDIS_URL = os.environ.get("SEGARENA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def require(ok: bool, what: str) -> None:
    """Skip (developer machine) or fail (CI) when a service the test needs is missing."""
    if ok:
        return
    message = f"{what} is not available; run the tests with ./segarena.sh test, which starts it"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def docker_client():
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # noqa: BLE001
        require(False, f"the Docker engine ({exc.__class__.__name__})")
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    import docker

    try:
        docker_client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        require(False, f"the base image {BASE_IMAGE} (scripts/build-base-image.sh)")
    return BASE_IMAGE


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:  # noqa: BLE001
        require(False, f"Redis at {REDIS_URL} ({exc.__class__.__name__})")
    return REDIS_URL


def _pg_admin_url(dbname: str = "postgres") -> str:
    return f"postgresql+psycopg://segarena:segarena@127.0.0.1:{PG_PORT}/{dbname}"


@pytest.fixture(scope="session")
def postgres_server() -> str:
    try:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={PG_PORT} user=segarena password=segarena dbname=postgres", connect_timeout=3):
            pass
    except Exception as exc:  # noqa: BLE001
        require(False, f"PostgreSQL on 127.0.0.1:{PG_PORT} ({exc.__class__.__name__})")
    return _pg_admin_url()


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = "segarena_test_" + secrets.token_hex(6)
    dsn = f"host=127.0.0.1 port={PG_PORT} user=segarena password=segarena dbname=postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _pg_admin_url(name)
    from api.db import dispose_engines

    dispose_engines()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """Embedded-mode settings in a fresh data dir (SQLite, embedded broker, local storage)."""
    from api.settings import Settings, get_settings

    for key in list(os.environ):
        if key.startswith("SEGARENA_") and key not in {"SEGARENA_BASE_IMAGE", "SEGARENA_PG_PORT"}:
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SEGARENA_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    s = Settings(data_dir=tmp_path / "data", base_image=BASE_IMAGE)
    s.ensure_dirs()
    yield s
    get_settings.cache_clear()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


# Tests that restart the shared services (the Docker engine, Redis, PostgreSQL) run after everything else, so
# a restart never lands in the middle of another test. (This used to be done by naming the file test_zz_*.)
RUN_LAST = ("tests/resilience/test_resilience_faults.py",)


def pytest_collection_modifyitems(session, config, items) -> None:
    def last(item) -> bool:
        return any(item.nodeid.startswith(path) for path in RUN_LAST)

    items[:] = [i for i in items if not last(i)] + [i for i in items if last(i)]
