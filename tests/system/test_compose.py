"""docker-compose.yml: the scaled-out production stack is complete, health-checked, and consistent with the settings:
the trusted side (api, scorer) has the database and S3 storage; execution hosts have three settings, their Docker
socket and their own cache, and no database or storage."""

from __future__ import annotations

import yaml

from api.settings import Settings
from tests.conftest import ROOT


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


TRUSTED = ("api", "scorer")
WORKERS = ("worker-cpu", "worker-gpu")
WORKER_REQUIRED = {"SEGARENA_API_URL", "SEGARENA_WORKER_TOKEN", "SEGARENA_BROKER_URL"}
# what an execution host may be given beyond the three (its cache path, its GPUs); never a database or storage
WORKER_ALLOWED = WORKER_REQUIRED | {"SEGARENA_CACHE_DIR", "SEGARENA_WORKER_GPUS"}


def _env(service: dict) -> dict:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def _resolve(value: str) -> str:
    """``${VAR:-default}`` -> default (what compose uses when the variable is unset)."""
    import re

    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_services_and_healthchecks():
    services = _compose()["services"]
    assert {"postgres", "redis", "minio", "minio-setup", *TRUSTED, *WORKERS} <= set(services)
    for name in ("postgres", "redis", "minio", *TRUSTED, *WORKERS):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    for name in TRUSTED:
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy" and deps["redis"]["condition"] == "service_healthy"
        assert deps["minio-setup"]["condition"] == "service_completed_successfully"  # the bucket exists
    assert services["minio-setup"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["scorer"]["command"] == ["segarena", "scorer"]
    for name in WORKERS:
        assert "postgres" not in services[name].get("depends_on", {})


def test_the_bucket_is_created_at_start_and_is_the_one_the_api_uses():
    from api.storage import parse_storage_url

    services = _compose()["services"]
    setup = " ".join(services["minio-setup"]["entrypoint"])
    kind, bucket, _prefix = parse_storage_url(_env(services["api"])["SEGARENA_STORAGE_URL"])
    assert kind == "s3" and f"mc mb --ignore-existing local/{bucket}" in setup
    minio = _env(services["minio"])
    for name in TRUSTED:
        env = _env(services[name])
        assert env["SEGARENA_S3_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
        assert env["SEGARENA_S3_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
        assert env["SEGARENA_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_workers_get_the_docker_socket_and_their_own_cache_and_the_trusted_side_neither():
    services = _compose()["services"]
    sock = "/var/run/docker.sock:/var/run/docker.sock"
    caches = set()
    for name in WORKERS:
        volumes = services[name]["volumes"]
        assert sock in volumes
        cache = _env(services[name])["SEGARENA_CACHE_DIR"]
        # the host engine bind-mounts case directories from the cache: host and container paths must match
        assert f"{cache}:{cache}" in volumes, (name, volumes)
        caches.add(cache)
        for v in volumes:  # no storage, no data dir, nothing of the trusted side
            assert "/var/lib/segarena" not in v and "trusted-data" not in v and "minio" not in v, (name, v)
    assert len(caches) == len(WORKERS), "each worker has its own cache"
    for name in TRUSTED:
        assert not any("docker.sock" in v for v in services[name].get("volumes", [])), name


def test_workers_have_three_settings_and_no_database_or_storage():
    from worker.config import REQUIRED, WorkerConfig

    services = _compose()["services"]
    assert {f"SEGARENA_{r.upper()}" for r in REQUIRED} == WORKER_REQUIRED
    fields = {f"SEGARENA_{name.upper()}" for name in WorkerConfig.model_fields} | {"SEGARENA_QUEUES"}
    for name in WORKERS:
        env = _env(services[name])
        keys = {k for k in env if k.startswith("SEGARENA_")}
        assert WORKER_REQUIRED <= keys <= WORKER_ALLOWED, (name, keys)
        assert not keys - fields, (name, keys - fields)  # every one is a real worker setting
        for forbidden in ("DATABASE", "STORAGE", "S3_", "DATA_DIR", "POSTGRES", "MINIO"):
            assert not any(forbidden in k or forbidden.lower() in v.lower() for k, v in env.items()), (name, forbidden)
    # the worker's own settings object reads them (no api/ settings involved)
    cpu = {k: _resolve(v) for k, v in _env(services["worker-cpu"]).items()}
    cpu["SEGARENA_WORKER_TOKEN"] = cpu["SEGARENA_WORKER_TOKEN"] or "sa_worker_test"
    config = WorkerConfig(**{k[len("SEGARENA_"):].lower(): v for k, v in cpu.items()})
    assert config.api_url == "http://api:8000" and config.broker_url == "redis://redis:6379/0"
    assert config.queues == ["cpu"] and str(config.cache_dir) == cpu["SEGARENA_CACHE_DIR"]
    gpu = {k: _resolve(v) for k, v in _env(services["worker-gpu"]).items()}
    gpu["SEGARENA_WORKER_TOKEN"] = gpu["SEGARENA_WORKER_TOKEN"] or "sa_worker_test"
    gpu_config = WorkerConfig(**{k[len("SEGARENA_"):].lower(): v for k, v in gpu.items()})
    assert gpu_config.queues == ["gpu"]
    # the broker the workers use is the API's
    assert config.broker_url == _env(services["api"])["SEGARENA_BROKER_URL"]


def test_api_and_scorer_read_the_same_settings(monkeypatch, tmp_path):
    services = _compose()["services"]
    envs = {name: _env(services[name]) for name in TRUSTED}
    for key in ("SEGARENA_DATABASE_URL", "SEGARENA_BROKER_URL", "SEGARENA_DATA_DIR", "SEGARENA_STORAGE_URL",
                "SEGARENA_S3_ENDPOINT_URL", "SEGARENA_S3_ACCESS_KEY_ID", "SEGARENA_S3_SECRET_ACCESS_KEY"):
        values = {name: env[key] for name, env in envs.items()}
        assert len(set(values.values())) == 1, (key, values)
    # both keep the data dir (test sets: the ground truth) on the same volume
    for name in TRUSTED:
        assert "trusted-data:/var/lib/segarena" in services[name]["volumes"], name
    # every SEGARENA_ variable the stack sets is a real setting (a typo would be silently ignored)
    fields = {f"SEGARENA_{name.upper()}" for name in Settings.model_fields} | {"SEGARENA_QUEUES"}
    for name, env in envs.items():
        unknown = {k for k in env if k.startswith("SEGARENA_")} - fields
        assert not unknown, (name, unknown)
    # and the settings object reads them
    for key, value in envs["scorer"].items():
        monkeypatch.setenv(key, _resolve(value))
    s = Settings()
    assert s.database_url.startswith("postgresql+psycopg://") and s.broker_url == "redis://redis:6379/0"
    assert s.storage_url == "s3://segarena/segarena" and s.s3_endpoint_url == "http://minio:9000"
    assert s.s3_secret_access_key.get_secret_value() == "segarena-minio-secret"
    from api.storage import S3Storage, Storage

    store = Storage.from_settings(s)
    assert isinstance(store, S3Storage) and store.bucket == "segarena" and store.prefix == "segarena/"
