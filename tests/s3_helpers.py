"""An S3-compatible server for tests: moto's server mode on 127.0.0.1 (a random port), one per session.

Import the fixtures you need: ``from s3_helpers import s3_server, s3_store, s3_settings  # noqa: F401``.

- ``s3_server``: the endpoint URL (``http://127.0.0.1:PORT``) of a moto server started as a subprocess
  (skips on a developer machine without moto, FAILS under ``CI=true``: moto comes with the test extra).
- ``s3_store``: an :class:`api.storage.S3Storage` on a fresh bucket of that server, prefix ``pre/fix/``.
- ``s3_settings``: the ``settings`` fixture switched to that bucket (``SEGARENA_STORAGE_URL=s3://…``).
"""

from __future__ import annotations

import os
import sys
import uuid

import pytest
from tests.conftest import require
from tests.processes import kill, log_tail, spawn, stop
from tests.servers import free_port
from tests.waiting import WaitTimeout, wait_until

__all__ = ["s3_server", "s3_store", "s3_settings", "S3_KEY", "S3_SECRET", "new_bucket"]

S3_KEY = "segarena-test-key"
S3_SECRET = "segarena-test-secret-s3cr3t"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    try:
        import moto.server  # noqa: F401
    except ImportError:
        require(False, "moto's S3 server (pip install -e '.[test]')")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env, log=log)
    url = f"http://127.0.0.1:{port}"
    import httpx

    def answers() -> bool:  # any answer: the server is up
        try:
            httpx.get(url + "/moto-api/", timeout=2)
            return True
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, 60, "moto's S3 server to answer", interval=0.2, proc=proc)
    except WaitTimeout:
        kill(proc)
        require(False, f"moto's S3 server (did not start: {log_tail(log, 500)})")
    yield url
    stop(proc, timeout=10)


def new_bucket() -> str:
    return "segarena-" + uuid.uuid4().hex[:12]


@pytest.fixture
def s3_store(s3_server, tmp_path):
    from api.storage import S3Storage, Storage

    store = S3Storage(new_bucket(), "pre/fix/", endpoint_url=s3_server, region="us-east-1", access_key_id=S3_KEY,
                      secret_access_key=S3_SECRET, part_bytes=5 << 20, staging=Storage(tmp_path / "staging"))
    assert store.ensure_bucket() is True
    return store


@pytest.fixture
def s3_settings(settings, s3_server):
    """The embedded settings, with archives and outputs in a fresh bucket of the test S3 server."""
    from pydantic import SecretStr

    from api.storage import S3Storage

    bucket = new_bucket()
    settings.storage_url = f"s3://{bucket}/segarena"
    settings.s3_endpoint_url = s3_server
    settings.s3_region = "us-east-1"
    settings.s3_access_key_id = S3_KEY
    settings.s3_secret_access_key = SecretStr(S3_SECRET)
    settings.s3_part_bytes = 5 << 20
    store = S3Storage.from_settings(settings)
    assert isinstance(store, S3Storage) and store.ensure_bucket()
    return settings
