"""An S3-compatible server for tests: moto's server mode on 127.0.0.1 (a random port), one per session.

Import the fixtures you need: ``from s3_helpers import s3_server, s3_store, s3_settings  # noqa: F401``.

- ``s3_server``: the endpoint URL (``http://127.0.0.1:PORT``) of a moto server started as a subprocess
  (skips on a developer machine without moto, FAILS under ``CI=true``: moto comes with the test extra).
- ``s3_store``: an :class:`api.storage.S3Storage` on a fresh bucket of that server, prefix ``pre/fix/``.
- ``s3_settings``: the ``settings`` fixture switched to that bucket (``SEGARENA_STORAGE_URL=s3://…``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid

import pytest
from tests.conftest import require

__all__ = ["s3_server", "s3_store", "s3_settings", "S3_KEY", "S3_SECRET", "new_bucket"]

S3_KEY = "segarena-test-key"
S3_SECRET = "segarena-test-secret-s3cr3t"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    try:
        import moto.server  # noqa: F401
    except ImportError:
        require(False, "moto's S3 server (pip install -e '.[test]')")
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    import httpx

    while True:
        try:
            httpx.get(url + "/moto-api/", timeout=2)
            break
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                require(False, f"moto's S3 server (did not start: {log.read_text()[-500:]})")
            time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
