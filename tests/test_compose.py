"""docker-compose.yml: the production stack is complete, healthy-checked, and consistent with Settings."""

from __future__ import annotations

import yaml

from api.settings import Settings
from tests.conftest import ROOT


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_healthchecks():
    services = _compose()["services"]
    assert {"postgres", "redis", "api", "worker-cpu", "worker-gpu"} <= set(services)
    for name in ("postgres", "redis", "api", "worker-cpu", "worker-gpu"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    for name in ("api", "worker-cpu"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_workers_get_the_docker_socket_and_the_api_does_not():
    services = _compose()["services"]
    sock = "/var/run/docker.sock:/var/run/docker.sock"
    assert sock in services["worker-cpu"]["volumes"] and sock in services["worker-gpu"]["volumes"]
    assert not any("docker.sock" in v for v in services["api"].get("volumes", []))


def test_storage_is_mounted_at_the_same_path_everywhere():
    """Workers bind-mount case dirs through the host engine: host and container paths must match."""
    services = _compose()["services"]
    for name in ("api", "worker-cpu", "worker-gpu"):
        mounts = [v for v in services[name]["volumes"] if "segarena" in v and "docker.sock" not in v]
        assert mounts and all(v.split(":")[0] == v.split(":")[1] for v in mounts), (name, mounts)


def test_api_and_workers_read_the_same_settings(monkeypatch, tmp_path):
    services = _compose()["services"]
    envs = {name: services[name]["environment"] for name in ("api", "worker-cpu", "worker-gpu")}
    keys = {"SEGARENA_DATABASE_URL", "SEGARENA_BROKER_URL", "SEGARENA_STORAGE_DIR", "SEGARENA_DATA_DIR"}
    for key in keys:
        values = {name: env[key] for name, env in envs.items()}
        assert len(set(values.values())) == 1, (key, values)
    assert envs["worker-cpu"]["SEGARENA_WORKER_QUEUES"] == "cpu"
    assert envs["worker-gpu"]["SEGARENA_WORKER_QUEUES"] == "gpu"
    # every SEGARENA_ variable the stack sets is a real setting (a typo would be silently ignored)
    fields = {f"SEGARENA_{name.upper()}" for name in Settings.model_fields}
    for name, env in envs.items():
        unknown = {k for k in env if k.startswith("SEGARENA_")} - fields
        assert not unknown, (name, unknown)
    # and the settings object reads them
    for key, value in envs["worker-cpu"].items():
        monkeypatch.setenv(key, str(value).replace("${POSTGRES_PASSWORD:-segarena}", "segarena"))
    s = Settings()
    assert s.database_url.startswith("postgresql+psycopg://") and s.broker_url == "redis://redis:6379/0"
    assert str(s.storage_dir) == "/var/lib/segarena/storage" and s.queues == ["cpu"]
