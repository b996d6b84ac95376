"""The Docker engine: one client per engine address, the engine-vs-image error split, image loading
(checked against the uploaded image id) and the user a case container runs as."""

from __future__ import annotations

import io
import os
import re
import socket
import threading
from pathlib import Path
from typing import Any

from .profile import NONROOT_USER


class SandboxInfraError(RuntimeError):
    """The Docker engine failed (unreachable, internal error): not the participant's fault."""


class ImageLoadError(RuntimeError):
    """The stored archive does not load, or loads as a different image than the upload's."""


_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def get_docker_client(settings: Any = None, *, timeout: int = 600) -> Any:
    """A dedicated Docker client (generous timeouts), created lazily, one per engine address."""
    import docker

    host = getattr(settings, "docker_host", None) if settings is not None else None
    key = host or "env"
    with _clients_lock:
        if key not in _clients:
            _probe_unix_socket(host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
            try:
                if host:
                    _clients[key] = docker.DockerClient(base_url=host, timeout=timeout)
                else:
                    _clients[key] = docker.from_env(timeout=timeout)
            except docker.errors.DockerException as exc:
                raise SandboxInfraError(f"the Docker engine is unreachable: {exc}") from exc
        return _clients[key]


def _probe_unix_socket(address: str) -> None:
    """Fail fast (and without leaking the socket, as docker-py does) when a unix engine socket is dead."""
    if not address.startswith("unix://"):
        return
    path = address[len("unix://"):]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(10)
        sock.connect(path)
    except OSError as exc:
        raise SandboxInfraError(f"the Docker engine is unreachable at {address}: {exc.strerror or exc}") from exc
    finally:
        sock.close()


def forget_docker_client(settings: Any = None) -> None:
    """Drop the cached client (after the engine went away)."""
    host = getattr(settings, "docker_host", None) if settings is not None else None
    with _clients_lock:
        client = _clients.pop(host or "env", None)
    if client is not None:
        try:
            client.close()
        except Exception:
            pass


def _is_engine_error(exc: BaseException) -> bool:
    import docker
    import requests

    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout | ConnectionError):
        return True
    if isinstance(exc, docker.errors.APIError) and exc.status_code is not None and exc.status_code >= 500:
        text = str(exc.explanation or exc).lower()
        # an OCI runtime error at start is the image's fault (no /bin/sh, unknown user, ...)
        return not any(s in text for s in ("oci runtime", "unable to find user", "no such file", "executable file not found"))
    return isinstance(exc, docker.errors.DockerException) and not isinstance(exc, docker.errors.APIError)


def load_image(client: Any, archive: Path, *, expected_id: str) -> tuple[Any, bool]:
    """Load a ``docker save`` archive unless the image is already present; check its id.

    Returns (image, loaded_now). Raises :class:`ImageLoadError` when the archive does not load or
    holds another image, :class:`SandboxInfraError` when the engine fails.
    """
    import docker

    try:
        try:
            image = client.images.get(expected_id)
            return image, False
        except docker.errors.ImageNotFound:
            pass
        try:
            with open(archive, "rb") as fh:
                images = client.images.load(fh)
        except docker.errors.ImageLoadError as exc:
            raise ImageLoadError(f"the image archive does not load: {exc}") from exc
        except docker.errors.APIError as exc:
            if _is_engine_error(exc):
                raise
            raise ImageLoadError(f"the image archive does not load: {exc.explanation or exc}") from exc
        ids = [img.id for img in images]
        if expected_id not in ids:
            raise ImageLoadError(
                f"the archive loaded as {', '.join(ids) or 'nothing'}, not the uploaded image {expected_id}; "
                "upload the archive again")
        return client.images.get(expected_id), True
    except (ImageLoadError, OSError):
        raise
    except Exception as exc:
        if _is_engine_error(exc):
            raise SandboxInfraError(f"Docker engine error while loading the image: {exc}") from exc
        raise


def image_runs_as_root(image_attrs: dict[str, Any]) -> bool:
    """True when the image config's User is empty, ``root`` or numerically uid 0 (``0``, ``00``, ...).

    A first look from the config alone: a name aliased to uid 0 in the image's /etc/passwd is only
    found by :func:`resolve_user`, which is what decides the user a case runs as."""
    user = ((image_attrs.get("Config") or {}).get("User") or "").strip()
    name = user.split(":", 1)[0].strip()
    return name in {"", "root"} or (_NUMERIC.fullmatch(name) is not None and int(name) == 0)


_NUMERIC = re.compile(r"[0-9]{1,10}")
_MAX_ID = 2**31 - 2  # the engine (runc) refuses larger ids
_ID_FILE_MAX_BYTES = 1024**2


def _image_id_files(client: Any, image_id: str, labels: dict[str, str]) -> dict[str, str]:
    """/etc/passwd and /etc/group of the image (those that are regular files under 1 MiB), read from a
    created, never started container."""
    import tarfile

    import docker

    api = client.api
    out: dict[str, str] = {}
    try:
        cid = api.create_container(image_id, command=["/bin/true"], entrypoint=[], network_disabled=True,
                                   labels=dict(labels),
                                   host_config=api.create_host_config(network_mode="none"))["Id"]
    except docker.errors.APIError as exc:
        if _is_engine_error(exc):
            raise
        return out  # the image's fault: its names cannot be resolved (the caller falls back to NONROOT_USER)
    try:
        for path in ("/etc/passwd", "/etc/group"):
            try:
                stream, info = api.get_archive(cid, path)
            except docker.errors.APIError:
                continue  # missing, or a path the engine will not copy (a link loop...): not resolvable
            if info.get("linkTarget") or int(info.get("size") or 0) > _ID_FILE_MAX_BYTES:
                continue
            buf = bytearray()
            for chunk in stream:
                buf += chunk
                if len(buf) > _ID_FILE_MAX_BYTES + 64 * 1024:
                    break
            try:
                with tarfile.open(fileobj=io.BytesIO(bytes(buf))) as tar:
                    member = tar.next()
                    if member is not None and member.isfile() and member.size <= _ID_FILE_MAX_BYTES:
                        fh = tar.extractfile(member)
                        if fh is not None:
                            out[path] = fh.read().decode("utf-8", "replace")
            except (tarfile.TarError, OSError):
                continue
    finally:
        try:
            api.remove_container(cid, force=True)
        except Exception:
            pass
    return out


def _lookup(text: str, name: str, id_field: int) -> tuple[int, int | None] | None:
    """(id, primary gid or None) of the first entry named ``name`` in passwd (id_field 2) or group text."""
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) > id_field and parts[0] == name and _NUMERIC.fullmatch(parts[id_field].strip()):
            gid = parts[3].strip() if id_field == 2 and len(parts) > 3 else ""
            return int(parts[id_field]), (int(gid) if _NUMERIC.fullmatch(gid) else None)
    return None


def resolve_user(client: Any, image_id: str, image_attrs: dict[str, Any] | None = None, *, allow_root: bool,
                 labels: dict[str, str] | None = None) -> tuple[str | None, str]:
    """The ``user`` a case container runs as, and how it was chosen (for ``CaseRun.user``).

    A track that allows root runs the image's own user (None: the engine's default). Otherwise the
    container always gets an explicit numeric ``uid:gid``, so the engine resolves no name: the image's
    user, resolved the way the engine does (a number is a uid, ``00`` included; a name is looked up in
    the image's /etc/passwd, first entry wins; a group name in /etc/group; no group: the passwd entry's
    gid, else 0), when its uid is not 0; the fixed :data:`NONROOT_USER` when it is root (empty, ``root``,
    ``00``, a passwd alias of uid 0) or cannot be resolved."""
    if allow_root:
        return None, "image default"
    if image_attrs is None:
        image_attrs = client.images.get(image_id).attrs
    declared = ((image_attrs.get("Config") or {}).get("User") or "").strip()
    user_part, _, group_part = declared.partition(":")
    files: dict[str, str] | None = None

    def id_files() -> dict[str, str]:
        nonlocal files
        if files is None:
            files = _image_id_files(client, image_id, labels or {})
        return files

    uid: int | None = None
    gid: int | None = None
    if _NUMERIC.fullmatch(user_part):
        uid = int(user_part)
        if not group_part and uid != 0:
            primary = _lookup_uid(id_files().get("/etc/passwd", ""), uid)
            gid = primary if primary is not None else 0
    elif user_part and user_part != "root":
        found = _lookup(id_files().get("/etc/passwd", ""), user_part, 2)
        if found is not None:
            uid, gid = found[0], (found[1] if found[1] is not None else 0)
    if uid is not None and uid != 0 and group_part:
        if _NUMERIC.fullmatch(group_part):
            gid = int(group_part)
        else:
            found = _lookup(id_files().get("/etc/group", ""), group_part, 2)
            gid = found[0] if found is not None else None
            if gid is None:
                uid = None  # the engine would refuse an unknown group: run as the fixed user instead
    if uid is None or uid == 0 or uid > _MAX_ID or gid is None or gid > _MAX_ID:
        return NONROOT_USER, NONROOT_USER
    return f"{uid}:{gid}", "image default"


def _lookup_uid(passwd: str, uid: int) -> int | None:
    """The primary gid of the first passwd entry with ``uid`` (as the engine picks a numeric user's group)."""
    for line in passwd.splitlines():
        parts = line.split(":")
        if len(parts) > 3 and _NUMERIC.fullmatch(parts[2].strip()) and int(parts[2]) == uid \
                and _NUMERIC.fullmatch(parts[3].strip()):
            return int(parts[3])
    return None
