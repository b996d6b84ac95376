"""The worker routes' HTTP client (worker/client.py) against a real local HTTP server, and the config."""

from __future__ import annotations

import hashlib
import json
import socket
import time

import pytest

from tests.exec_helpers import TOKEN, FakeWorkerAPI, clean_env, fake_api, make_client, worker_config  # noqa: F401
from worker.client import DigestMismatch, Forbidden, InfraError, LeaseLost


def _running_shard(fake_api, tmp_path, case_bytes: bytes = b"case-bytes") -> tuple[int, str, str]:
    (tmp_path / "in").mkdir(exist_ok=True)
    case = tmp_path / "in" / "2DBox_US_0001.npz"
    case.write_bytes(case_bytes)
    sid = fake_api.add_shard(image={"sha256": "0" * 64, "bytes": 1, "image_id": "sha256:x"},
                             cases=[("2DBox_US_0001", case)])
    return sid, "2DBox_US_0001", hashlib.sha256(case_bytes).hexdigest()


def test_hello_claim_heartbeat_finish_with_the_bearer_token(worker_config, fake_api, make_client, tmp_path):
    client = make_client(worker_config)
    answer = client.hello({"name": "w1", "queues": ["cpu"], "calibration_s": 0.5})
    assert answer == {"name": "w1", "queues": ["cpu"], "heartbeat_s": 1.0}
    assert client.claim("w1", "cpu") is None  # 204: nothing to do
    sid, _, _ = _running_shard(fake_api, tmp_path)
    spec = client.claim("w1", "cpu")
    assert spec["shard_id"] == sid and spec["lease"]
    assert client.heartbeat(sid, spec["lease"]) == {"cancel": False}
    fake_api.shards[sid].cancel = True
    assert client.heartbeat(sid, spec["lease"]) == {"cancel": True}
    with pytest.raises(LeaseLost) as lost:
        client.heartbeat(sid, "another-lease")
    assert lost.value.status == 409 and lost.value.code == "lease_lost"
    client.finish(sid, spec["lease"], "done")
    assert fake_api.shards[sid].finished == [{"lease": spec["lease"], "outcome": "done", "reason": ""}]
    # a wrong token: 401 as Forbidden with the server's code and message
    bad = make_client(worker_config, token="nope")
    with pytest.raises(Forbidden, match="a worker token is required") as refused:
        bad.hello({"name": "w1", "queues": ["cpu"]})
    assert refused.value.status == 401
    # a queue the token may not serve: 403
    with pytest.raises(Forbidden, match="may not serve gpu"):
        client.hello({"name": "w1", "queues": ["gpu"]})


def test_retries_with_backoff_on_5xx_but_never_a_claim(worker_config, fake_api, make_client):
    client = make_client(worker_config, retries=3, backoff_s=0.1)
    fake_api.fail["hello"] = 2
    t0 = time.monotonic()
    assert client.hello({"name": "w", "queues": ["cpu"]})["name"] == "w"
    elapsed = time.monotonic() - t0
    assert fake_api.requests.count(("POST", "hello")) == 3
    assert elapsed >= 0.1 + 0.2  # two backoffs: 0.1 s, then 0.2 s
    fake_api.fail["hello"] = 10
    with pytest.raises(InfraError, match="503.*after 4 tries"):
        client.hello({"name": "w", "queues": ["cpu"]})
    # a claim whose answer is lost may have taken a shard: it is not repeated
    fake_api.fail["claim"] = 1
    before = fake_api.requests.count(("POST", "claim"))
    with pytest.raises(InfraError, match="503"):
        client.claim("w", "cpu")
    assert fake_api.requests.count(("POST", "claim")) == before + 1


def test_connection_refused_is_retried_then_an_infrastructure_error(clean_env, tmp_path, make_client):
    from worker.config import WorkerConfig

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    config = WorkerConfig(api_url=f"http://127.0.0.1:{port}", worker_token=TOKEN, broker_url="redis://x",
                          cache_dir=tmp_path / "c")
    client = make_client(config, retries=2, backoff_s=0.05)
    t0 = time.monotonic()
    with pytest.raises(InfraError, match=f"cannot reach the API at http://127.0.0.1:{port}.*after 3 tries"):
        client.claim("w", "cpu")  # never reached the server: safe to retry even a claim
    assert 0.15 <= time.monotonic() - t0 < 10


def test_streamed_download_checks_sha256_and_size(worker_config, fake_api, make_client, tmp_path):
    client = make_client(worker_config)
    payload = bytes(range(256)) * 5000  # 1.28 MB: several chunks
    sid, case_id, sha = _running_shard(fake_api, tmp_path, payload)
    spec = client.claim("w", "cpu")
    url = spec["cases"][0]["url"]
    dest = tmp_path / "dl" / "case.npz"
    client.download(url, dest, sha256=sha, size=len(payload), params={"lease": spec["lease"]})
    assert dest.read_bytes() == payload
    for kwargs, match in (({"sha256": "ab" * 32, "size": len(payload)}, "differs from the announced"),
                          ({"sha256": sha, "size": len(payload) - 1}, "more than the announced"),
                          ({"sha256": sha, "size": len(payload) + 1}, "the spec announces")):
        bad = tmp_path / "dl" / "bad.npz"
        with pytest.raises(DigestMismatch, match=match):
            client.download(url, bad, params={"lease": spec["lease"]}, **kwargs)
        assert not bad.exists()
        assert [p.name for p in bad.parent.iterdir()] == ["case.npz"]  # no partial file left
    with pytest.raises(LeaseLost):
        client.download(url, tmp_path / "dl" / "x.npz", sha256=sha, params={"lease": "stale"})


def test_case_upload_is_multipart_meta_and_output(worker_config, fake_api, make_client, tmp_path):
    client = make_client(worker_config)
    sid, case_id, _ = _running_shard(fake_api, tmp_path)
    spec = client.claim("w", "cpu")
    out = tmp_path / "2DBox_US_0001.npz"
    out.write_bytes(b"\x00prediction\xff" * 1000)
    meta = {"lease": spec["lease"], "status": "ok", "runtime_s": 1.25, "wall_s": 1.5, "stdout_tail": "ü"}
    fake_api.fail["upload"] = 1  # idempotent per case: retried, the file sent whole again
    assert client.upload_case(sid, case_id, meta, out) == {"cancel": False}
    [up] = fake_api.uploads_of(sid)
    assert up["meta"] == meta and up["output"] == out.read_bytes() and up["output_name"] == out.name
    # a repeat is answered as a duplicate; no output for a failed case
    assert client.upload_case(sid, case_id, {**meta, "status": "crash"})["duplicate"] is True
    with pytest.raises(LeaseLost):
        client.upload_case(sid, case_id, {**meta, "lease": "stale"})
    assert json.dumps(up["meta"])  # round-tripped as JSON


def test_an_injected_httpx_client_reaches_an_in_process_api(worker_config):
    """Starlette's TestClient (an httpx.Client) drives the routes in process, no socket."""
    from fastapi.testclient import TestClient

    from worker.client import WorkerClient

    api = FakeWorkerAPI()
    with TestClient(api.app) as http:
        client = WorkerClient(worker_config, http=http)
        assert client.hello({"name": "in-process", "queues": ["cpu"]})["name"] == "in-process"
        assert client.claim("in-process", "cpu") is None
        client.close()  # does not close the injected client
        assert client.hello({"name": "again", "queues": ["cpu"]})["name"] == "again"
    assert [h["name"] for h in api.hellos] == ["in-process", "again"]


def test_config_needs_the_three_settings_and_reads_the_environment(clean_env, tmp_path):
    from worker import sandbox as sb
    from worker.config import ConfigError, load_config

    with pytest.raises(ConfigError) as missing:
        load_config()
    for var in ("SEGARENA_API_URL", "SEGARENA_WORKER_TOKEN", "SEGARENA_BROKER_URL"):
        assert f"{var} is not set" in str(missing.value)
    clean_env.setenv("SEGARENA_API_URL", "ftp://nope")
    clean_env.setenv("SEGARENA_WORKER_TOKEN", "tok")
    clean_env.setenv("SEGARENA_BROKER_URL", "redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigError, match="SEGARENA_API_URL.*http"):
        load_config()
    clean_env.setenv("SEGARENA_API_URL", "http://api.example:8000/")
    clean_env.setenv("SEGARENA_QUEUES", "cpu:cpu,big:cpu,gpu:gpu")
    clean_env.setenv("SEGARENA_CACHE_DIR", str(tmp_path / "cache"))
    config = load_config()
    assert config.api_url == "http://api.example:8000" and config.queues == ["cpu", "big"]
    assert config.worker_name and config.cache_dir == tmp_path / "cache"
    assert "tok" not in repr(config)  # the token is never printed
    # the sandbox reads the same attribute names from it as from the API's settings
    profile = sb.SandboxProfile.from_caps({"cpus": 1, "memory_mb": 256, "case_timeout_s": 5, "output_max_files": 4},
                                          config)
    assert profile.memory_bytes == 256 * 1024**2 and profile.timeout_s == 5 and profile.max_output_files == 4
    assert profile.max_output_bytes == config.output_max_bytes
    assert sb.deployment_id(config) == config.deployment_id and len(config.deployment_id) == 16
    clean_env.setenv("SEGARENA_WORKER_GPUS", "0")
    assert load_config().queues == ["gpu"]
