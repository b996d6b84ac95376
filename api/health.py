"""``GET /health``: overall status for anyone; the database, broker, Docker engine and storage, each with status and
version, for organizers (secrets in URLs and error messages redacted whole)."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import APIRouter

from api.db import db_version, get_engine
from api.deps import OptionalMember, SettingsDep
from api.models import Role

router = APIRouter(tags=["health"])


def platform_version() -> str:
    """The installed ``segarena`` distribution's version (package metadata; the API never imports the CLI)."""
    try:
        return version("segarena")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


_SECRET_KEYS = ("pass", "pwd", "secret", "token", "key", "auth", "cred", "sig")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """``url`` without its secrets: the whole userinfo (everything up to the LAST ``@``, so a password
    containing ``@`` leaks nothing) becomes ``***``, and so does the value of every query parameter
    whose name looks like a secret (``password=``, ``token=``, ``secret=``, ``key=`` …)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    head, q, query = rest.partition("?")
    if q:
        parts = []
        for item in query.split("&"):
            name, eq, _value = item.partition("=")
            parts.append(f"{name}=***" if eq and any(k in name.lower() for k in _SECRET_KEYS) else item)
        rest = head + "?" + "&".join(parts)
    return f"{scheme}://{rest}"


def redact_text(text: str) -> str:
    """Every URL inside ``text`` (an error message) redacted by :func:`redact_url`."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def _error(exc: BaseException) -> str:
    return redact_text(str(exc).splitlines()[0][:300] if str(exc) else exc.__class__.__name__)


def check_database(url: str) -> dict[str, Any]:
    try:
        engine = get_engine(url)
        return {"ok": True, "dialect": engine.dialect.name, "version": db_version(engine)}
    except Exception as exc:  # any failure is reported, not raised
        return {"ok": False, "error": _error(exc)}


def check_broker(url: str) -> dict[str, Any]:
    info: dict[str, Any] = {"url": redact_url(url)}
    try:
        if url.startswith("redis"):
            import redis

            client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
            server: dict[str, Any] = client.info("server")  # type: ignore[assignment]  # sync client: a dict
            info.update(ok=True, kind="redis", version="Redis " + str(server["redis_version"]))
            client.close()
        elif url.startswith("sqla+"):
            import kombu

            engine = get_engine(url[len("sqla+"):])
            info.update(ok=True, kind="embedded",
                        version=f"kombu {kombu.__version__} sqlalchemy transport on {db_version(engine)}")
        else:
            info.update(ok=True, kind=url.split(":", 1)[0], version="unchecked")
    except Exception as exc:
        info.update(ok=False, error=_error(exc))
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
        return {"ok": False, "error": _error(exc)}


def check_storage(settings) -> dict[str, Any]:
    """The storage backend: the local directory is writable, or the S3 bucket answers (URLs redacted)."""
    try:
        from api.storage import Storage

        return Storage.from_settings(settings, probe=True).describe()
    except Exception as exc:
        return {"ok": False, "url": redact_url(getattr(settings, "storage_url", "") or ""), "error": _error(exc)}


@router.get("/health", summary="Status; for organizers also the versions of the database, broker and Docker engine")
def health(settings: SettingsDep, member: OptionalMember) -> dict[str, Any]:
    """Anonymous callers (load balancers, probes) get the overall status only; versions, the (redacted)
    broker URL and error details are for organizers."""
    parts = {
        "database": check_database(settings.database_url),
        "broker": check_broker(settings.broker_url),
        "docker": check_docker(settings.docker_host),
        "storage": check_storage(settings),
    }
    status = "ok" if all(p["ok"] for p in parts.values()) else "degraded"
    if member is None or member.role != Role.organizer:
        return {"status": status}
    return {"status": status, "version": platform_version(), **parts}
