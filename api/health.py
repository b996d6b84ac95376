"""``GET /health``: the database, broker and Docker engine, each with status and version."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.db import db_version, get_engine
from api.deps import SettingsDep
from segarena import __version__

router = APIRouter(tags=["health"])


def _redact(url: str) -> str:
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def check_database(url: str) -> dict[str, Any]:
    try:
        engine = get_engine(url)
        return {"ok": True, "dialect": engine.dialect.name, "version": db_version(engine)}
    except Exception as exc:  # any failure is reported, not raised
        return {"ok": False, "error": str(exc).splitlines()[0][:300]}


def check_broker(url: str) -> dict[str, Any]:
    info: dict[str, Any] = {"url": _redact(url)}
    try:
        if url.startswith("redis"):
            import redis

            client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
            info.update(ok=True, kind="redis", version="Redis " + str(client.info("server")["redis_version"]))
            client.close()
        elif url.startswith("sqla+"):
            import kombu

            engine = get_engine(url[len("sqla+"):])
            info.update(ok=True, kind="embedded", version=f"kombu {kombu.__version__} sqlalchemy transport on {db_version(engine)}")
        else:
            info.update(ok=True, kind=url.split(":", 1)[0], version="unchecked")
    except Exception as exc:
        info.update(ok=False, error=str(exc).splitlines()[0][:300])
    return info


def check_docker(docker_host: str | None) -> dict[str, Any]:
    try:
        import docker

        client = docker.DockerClient(base_url=docker_host, timeout=5) if docker_host else docker.from_env(timeout=5)
        try:
            version = client.version()
            return {"ok": True, "version": version.get("Version"), "api_version": version.get("ApiVersion")}
        finally:
            client.close()
    except Exception as exc:
        return {"ok": False, "error": str(exc).splitlines()[0][:300]}


@router.get("/health", summary="Status and versions of the database, broker and Docker engine")
def health(settings: SettingsDep) -> dict[str, Any]:
    parts = {
        "database": check_database(settings.database_url),
        "broker": check_broker(settings.broker_url),
        "docker": check_docker(settings.docker_host),
    }
    return {"status": "ok" if all(p["ok"] for p in parts.values()) else "degraded", "version": __version__, **parts}
