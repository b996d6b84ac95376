"""The Docker sandbox: run one case of an untrusted submission image under caps, timed and measured.

The submission contract is the CVPR 2024 one (../shared/DESIGN.md): a fresh input directory holding
only the case's file, mounted read-only at ``/workspace/inputs``; an empty output directory at
``/workspace/outputs``; the command ``/bin/sh -c "sh predict.sh"`` in the image's working directory.
Ground truth never enters the container.

Isolation (every container): ``network_mode=none``; memory limit = memory+swap limit (no swap);
CPU quota and a pinned cpuset; a pids limit; read-only root with a size-capped tmpfs at ``/tmp`` and
``HOME=/tmp``; all capabilities dropped; ``no-new-privileges``; an init process (docker-init); no
Docker socket and no host path besides the two case directories; SegArena's labels
(``segarena.run``, ``segarena.case``, ``segarena.worker``) so the reaper can find orphans.

Users. A track that forbids root (``Track.allow_root = False``, the default) runs an image whose
config ``User`` is empty or root as the fixed non-root ``1000:1000`` instead of refusing it: the
real 2024 images ran as root and must run unchanged. An image that declares a non-root user keeps
it. The output directory is made writable by any uid (mode 0777, a fresh directory per case), so
whichever user runs can write ``/workspace/outputs`` (MedSAM issue #211).

Measurement. Wall time is a monotonic clock from just before the container is started until the
engine reports its exit: it includes container start-up and model loading, as the reference timed
it; image loading, directory set-up and container creation/removal are outside the timer. CPU time
and peak memory come from a per-worker cgroup parent (cgroup v1, cgroupfs driver: the engine
creates ``/sys/fs/cgroup/<controller>/<parent>/<container id>``; the parent outlives the container,
so ``memory.max_usage_in_bytes`` — reset before each case — and the ``cpuacct.usage`` difference
are exact even for a process killed at its peak). Where the parent cannot be written (not root,
cgroup v2, systemd driver) the container's own cgroup is polled while it runs (a lower bound).

Runtime fidelity. One container at a time per worker (the worker runs with concurrency 1); the
container is pinned to the first ``ceil(cpus)`` cores of the worker's CPU set
(``settings.worker_cpus``, default all online cores) and takes an exclusive host-wide lock on each
of those cores (``flock`` under :data:`CORE_LOCK_DIR`) for the duration of the case, so two timed
runs on one host never share pinned cores even when workers are misconfigured. Several workers on one
host should nevertheless be given disjoint ``SEGARENA_WORKER_CPUS`` (e.g. ``0-3`` and ``4-7``),
otherwise they simply wait for each other. Workers running in separate containers that share one
host engine must share :data:`CORE_LOCK_DIR` (bind-mount it) for the lock to span them.
"""

from __future__ import annotations

import collections
import fcntl
import io
import math
import os
import re
import shutil
import socket
import stat
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    "SandboxProfile", "CaseRun", "SandboxInfraError", "run_case", "check_output", "get_docker_client",
    "load_image", "ImageLoadError", "image_runs_as_root", "resolve_user", "worker_identity", "cpu_model",
    "online_cpus", "cleanup_cgroup_parents", "parse_cpuset", "format_cpuset", "CgroupMeter", "LABEL_RUN", "LABEL_CASE",
    "LABEL_WORKER", "LABEL_DEPLOYMENT", "deployment_id", "CORE_LOCK_DIR", "NONROOT_USER", "INPUTS_MOUNT", "OUTPUTS_MOUNT",
]

LABEL_RUN = "segarena.run"
LABEL_CASE = "segarena.case"
LABEL_WORKER = "segarena.worker"
LABEL_DEPLOYMENT = "segarena.deployment"  # which database the run belongs to (engines may be shared)
INPUTS_MOUNT = "/workspace/inputs"
OUTPUTS_MOUNT = "/workspace/outputs"
NONROOT_USER = "1000:1000"
COMMAND = ["/bin/sh", "-c", "sh predict.sh"]
#: Host-wide directory of per-core lock files (see the module docstring).
CORE_LOCK_DIR = Path(os.environ.get("SEGARENA_CORE_LOCK_DIR", "/tmp/segarena-core-locks"))
LOG_KEEP_BYTES = 64 * 1024


class SandboxInfraError(RuntimeError):
    """The Docker engine failed (unreachable, internal error): not the participant's fault."""


class ImageLoadError(RuntimeError):
    """The stored archive does not load, or loads as a different image than the upload's."""


# --------------------------------------------------------------------------------------------
# profile and result


@dataclass(frozen=True)
class SandboxProfile:
    """Caps and isolation for one case container (built from a Track with :meth:`from_track`)."""

    memory_bytes: int = 8 * 1024**3
    cpus: float = 1.0
    cpuset: str = ""  # worker's CPU set; the container is pinned to its first ceil(cpus) cores
    pids_limit: int = 256
    tmpfs_bytes: int = 1024**3
    timeout_s: float = 60.0
    allow_root: bool = False
    gpus: tuple[str, ...] = ()  # GPU ids this worker owns (device request + CUDA_VISIBLE_DEVICES)
    log_keep_bytes: int = LOG_KEEP_BYTES  # head and tail kept of each of stdout/stderr
    max_output_bytes: int = 2 * 1024**3  # bound of outputs/: disk bytes, apparent (sparse) bytes, the prediction
    max_output_files: int = 16  # entries (files, directories, links) outputs/ may hold
    cgroup_parent: str | None = None  # per-worker cgroup parent (cgroupfs); None: poll the container

    @classmethod
    def from_track(cls, track: Any, settings: Any, **overrides: Any) -> "SandboxProfile":
        """The profile of ``track`` (a Track row) on this worker (``settings``)."""
        gpus: tuple[str, ...] = ()
        if getattr(track, "gpus", 0):
            owned = tuple(g.strip() for g in (settings.worker_gpus or "").split(",") if g.strip())
            gpus = owned[: int(track.gpus)] if owned else ()
        values: dict[str, Any] = dict(
            memory_bytes=int(track.memory_mb) * 1024**2,
            cpus=float(track.cpus),
            cpuset=settings.worker_cpus or format_cpuset(online_cpus()),
            pids_limit=int(track.pids_limit),
            tmpfs_bytes=int(track.tmpfs_mb) * 1024**2,
            timeout_s=float(track.case_timeout_s),
            allow_root=bool(track.allow_root),
            gpus=gpus,
            max_output_bytes=int(getattr(settings, "output_max_bytes", cls.max_output_bytes)),
            max_output_files=int(getattr(settings, "output_max_files", cls.max_output_files)),
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_caps(cls, caps: dict[str, Any], settings: Any, **overrides: Any) -> "SandboxProfile":
        """The profile of a shard spec's ``caps`` (docs/worker-protocol.md) on this worker (``settings``):
        the same caps as :meth:`from_track`, the output bounds from the caps where they name them."""
        from types import SimpleNamespace

        defaults = cls()
        track = SimpleNamespace(
            gpus=int(caps.get("gpus") or 0),
            memory_mb=int(caps.get("memory_mb") or defaults.memory_bytes // 1024**2),
            cpus=float(caps.get("cpus") or defaults.cpus),
            pids_limit=int(caps.get("pids_limit") or defaults.pids_limit),
            tmpfs_mb=int(caps.get("tmpfs_mb") or defaults.tmpfs_bytes // 1024**2),
            case_timeout_s=float(caps.get("case_timeout_s") or defaults.timeout_s),
            allow_root=bool(caps.get("allow_root", False)),
        )
        values: dict[str, Any] = {}
        if caps.get("output_max_bytes"):
            values["max_output_bytes"] = int(caps["output_max_bytes"])
        if caps.get("output_max_files"):
            values["max_output_files"] = int(caps["output_max_files"])
        values.update(overrides)
        return cls.from_track(track, settings, **values)

    @property
    def memory_text(self) -> str:
        """Human form of the memory cap, e.g. '8 GiB' or '256 MiB'."""
        return _human_bytes(self.memory_bytes)

    def pinned_cores(self) -> list[int]:
        """The cores the container is pinned to: the first ceil(cpus) of the worker's set."""
        cores = parse_cpuset(self.cpuset) if self.cpuset else online_cpus()
        n = max(1, min(len(cores), math.ceil(self.cpus)))
        return cores[:n]


@dataclass
class CaseRun:
    """What one case container did."""

    status: str  # a CaseStatus value: ok, timeout, oom, crash, no_output, invalid_output
    reason: str = ""
    runtime_s: float = 0.0  # measured wall time, start to exit
    cpu_s: float | None = None
    peak_memory_bytes: int | None = None
    exit_code: int | None = None
    stdout_head: str = ""
    stdout_tail: str = ""
    stderr_head: str = ""
    stderr_tail: str = ""
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    output_path: Path | None = None
    container_params: dict[str, Any] = field(default_factory=dict)
    user: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def log_text(self, stream: str) -> str:
        """Head and tail of ``stream`` ('stdout' or 'stderr') with a note of what was cut."""
        head, tail = getattr(self, f"{stream}_head"), getattr(self, f"{stream}_tail")
        total = getattr(self, f"{stream}_bytes")
        if not tail:
            return head
        kept = len(head.encode()) + len(tail.encode())
        return f"{head}\n[... {max(0, total - kept)} bytes of {stream} cut ...]\n{tail}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["output_path"] = str(self.output_path) if self.output_path else None
        return d


# --------------------------------------------------------------------------------------------
# host facts


def online_cpus() -> list[int]:
    """The host's online cores."""
    try:
        return parse_cpuset(Path("/sys/devices/system/cpu/online").read_text().strip())
    except OSError:
        return list(range(os.cpu_count() or 1))


def parse_cpuset(text: str) -> list[int]:
    """'0-2,5' -> [0, 1, 2, 5]."""
    cores: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cores.extend(range(int(lo), int(hi) + 1))
        else:
            cores.append(int(part))
    return sorted(set(cores))


def format_cpuset(cores: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    cores = sorted(set(cores))
    parts: list[str] = []
    i = 0
    while i < len(cores):
        j = i
        while j + 1 < len(cores) and cores[j + 1] == cores[j] + 1:
            j += 1
        parts.append(str(cores[i]) if i == j else f"{cores[i]}-{cores[j]}")
        i = j + 1
    return ",".join(parts)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def worker_identity() -> str:
    """'host:pid' of this worker process (the value of the segarena.worker label)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def deployment_id(settings: Any) -> str:
    """A short stable id of the deployment for container labels: ``settings.deployment_id`` where the
    settings name one (an execution host's :class:`worker.config.WorkerConfig`), else a hash of the
    database URL (the API's settings)."""
    import hashlib

    explicit = getattr(settings, "deployment_id", None)
    if isinstance(explicit, str) and explicit:
        return explicit
    return hashlib.sha256(settings.database_url.encode()).hexdigest()[:16]


def _human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


# --------------------------------------------------------------------------------------------
# docker client and images

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def get_docker_client(settings: Any = None, *, timeout: int = 600):
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
        except Exception:  # noqa: BLE001
            pass


def _is_engine_error(exc: BaseException) -> bool:
    import docker
    import requests

    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError)):
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
    except Exception as exc:  # noqa: BLE001
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
        except Exception:  # noqa: BLE001 - the reaper removes a leftover (it carries the labels)
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


# --------------------------------------------------------------------------------------------
# cgroup measurement


class CgroupMeter:
    """Peak memory and CPU time of one container (see the module docstring)."""

    ROOT = Path("/sys/fs/cgroup")

    def __init__(self, parent: str | None) -> None:
        self.parent = parent.strip("/") if parent else None
        self._cpu0 = 0
        self._pids0 = 0
        self._oom0 = 0
        self._poll_peak: int | None = None
        self._poll_cpu: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pids_hit = False

    @classmethod
    def usable_parent(cls, name: str) -> str | None:
        """``name`` when a cgroup v1 parent can be created and reset here, else None."""
        mem = cls.ROOT / "memory"
        if not (mem / "memory.max_usage_in_bytes").exists() or not os.access(mem, os.W_OK):
            return None
        return name

    def _file(self, controller: str, leaf: str, cid: str | None = None) -> Path:
        parts = [controller, self.parent] if cid is None else [controller, self.parent or "docker", cid]
        return self.ROOT.joinpath(*[p for p in parts if p]) / leaf

    @staticmethod
    def _read_int(path: Path) -> int | None:
        try:
            return int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _events(self, controller: str, leaf: str, key: str) -> int:
        try:
            for line in self._file(controller, leaf).read_text().splitlines():
                k, _, v = line.partition(" ")
                if k == key:
                    return int(v)
        except (OSError, ValueError):
            pass
        return 0

    def before_start(self) -> None:
        """Reset the parent's peak and note its counters (call after create, before start)."""
        if not self.parent:
            return
        try:
            for controller in ("memory", "cpuacct", "pids"):  # the engine creates the rest at start
                (self.ROOT / controller / self.parent).mkdir(exist_ok=True)
            try:
                # cgroup v1 moves a removed container's page cache (e.g. the files earlier cases wrote)
                # to the parent: reclaim it, or it would count toward this case's peak memory
                self._file("memory", "memory.force_empty").write_text("0")
            except OSError:
                pass  # busy (tasks still attached): the peak may include earlier cases' page cache
            self._file("memory", "memory.max_usage_in_bytes").write_text("0")
        except OSError:
            self.parent = None  # cannot reset: fall back to polling
            return
        self._cpu0 = self._read_int(self._file("cpuacct", "cpuacct.usage")) or 0
        self._pids0 = self._events("pids", "pids.events", "max")
        self._oom0 = self._events("memory", "memory.oom_control", "oom_kill")

    def poll(self, cid: str, pids_limit: int) -> None:
        """Poll the container's own cgroup while it runs: memory and CPU (fallback only) and, always,
        whether it reached its pids limit (fork failures are counted in the container's cgroup,
        which vanishes at exit: best effort)."""
        measure = not self.parent

        def loop() -> None:
            mem = self._file("memory", "memory.max_usage_in_bytes", cid)
            cpu = self._file("cpuacct", "cpuacct.usage", cid)
            pids = self._file("pids", "pids.current", cid)
            events = self._file("pids", "pids.events", cid)
            while not self._stop.wait(0.02):
                n = self._read_int(pids)
                if n is not None and n >= pids_limit:
                    self.pids_hit = True
                try:
                    if not self.pids_hit and "max 0" not in events.read_text():
                        self.pids_hit = True
                except OSError:
                    pass
                if not measure:
                    continue
                m, c = self._read_int(mem), self._read_int(cpu)
                if m is not None:
                    self._poll_peak = max(self._poll_peak or 0, m)
                if c is not None:
                    self._poll_cpu = c

        self._thread = threading.Thread(target=loop, name="cgroup-poll", daemon=True)
        self._thread.start()

    def result(self) -> tuple[int | None, float | None, bool, bool]:
        """(peak memory bytes, cpu seconds, pids limit hit, oom kill seen) after the container exited."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
        if not self.parent:
            cpu = self._poll_cpu / 1e9 if self._poll_cpu is not None else None
            return self._poll_peak, cpu, self.pids_hit, False
        peak = self._read_int(self._file("memory", "memory.max_usage_in_bytes"))
        cpu1 = self._read_int(self._file("cpuacct", "cpuacct.usage"))
        cpu = (cpu1 - self._cpu0) / 1e9 if cpu1 is not None else None
        pids_hit = self.pids_hit or self._events("pids", "pids.events", "max") > self._pids0
        oom = self._events("memory", "memory.oom_control", "oom_kill") > self._oom0
        return peak, cpu, pids_hit, oom


def cleanup_cgroup_parents() -> list[str]:
    """Remove the (empty) per-worker cgroup parents of dead workers of this host; returns their names."""
    prefix = f"segarena-{socket.gethostname()}-"
    removed: set[str] = set()
    try:
        controllers = [p for p in CgroupMeter.ROOT.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return []
    for ctl in controllers:
        try:
            parents = [p for p in ctl.iterdir() if p.is_dir() and p.name.startswith(prefix)]
        except OSError:
            continue
        for parent in parents:
            pid = parent.name[len(prefix):]
            if not pid.isdigit() or pid_alive(int(pid)):
                continue
            try:
                for child in parent.iterdir():
                    if child.is_dir():
                        child.rmdir()
                parent.rmdir()
                removed.add(parent.name)
            except OSError:
                pass  # still in use: next time
    return sorted(removed)


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------------------
# logs


class _OutputWatch:
    """Kills the container when what it writes to outputs/ grows past a limit, so an image cannot fill
    the worker's disk (or its inodes) through the one writable host directory. Three bounds: the disk
    bytes used (blocks), the apparent size (a sparse file costs no blocks but still breaks whoever
    reads it) and the number of entries (files of any kind, directories included). It polls 10 times
    a second (a fast writer can overshoot by what it writes in 0.1 s before it is stopped), and
    :meth:`final_check` looks once more after the container exited, so a writer that exits between two
    polls is caught too."""

    #: most entries a post-exit count walks before it reports "more than" (bounds the walk itself)
    COUNT_CAP = 100_000

    def __init__(self, api: Any, container_id: str, out_dir: Path, limit: int, interval: float = 0.1, *,
                 max_files: int = 16, max_apparent: int | None = None) -> None:
        self.api, self.container_id, self.out_dir, self.limit, self.interval = api, container_id, out_dir, limit, interval
        self.max_files = max_files
        self.max_apparent = limit if max_apparent is None else max_apparent
        self.exceeded = False
        self.killed = False  # stopped by the watch while running (else: found after it exited)
        self.reason = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="case-output-watch", daemon=True)

    def _measure(self, cap: int) -> tuple[int, int, int, bool]:
        """(entries, disk bytes, apparent bytes, walk cut at ``cap`` entries) of outputs/, never following links."""
        entries = used = apparent = 0
        stack = [str(self.out_dir)]
        while stack:
            try:
                it = os.scandir(stack.pop())
            except OSError:
                continue
            with it:
                for entry in it:
                    entries += 1
                    if entries > cap:
                        return entries, used, apparent, True
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    used += st.st_blocks * 512
                    if stat.S_ISREG(st.st_mode):
                        apparent += st.st_size
                    elif stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
        return entries, used, apparent, False

    def _size(self) -> int:
        return self._measure(self.COUNT_CAP)[1]

    def _check(self, cap: int) -> bool:
        entries, used, apparent, cut = self._measure(cap)
        if entries > self.max_files:
            count = f"more than {cap}" if cut else str(entries)
            self.reason = f"output limit: {count} files in outputs/ (limit {self.max_files})"
        elif used > self.limit:
            self.reason = (f"output limit: the container wrote more than {_human_bytes(self.limit)} to outputs/ "
                           f"({_human_bytes(used)} seen)")
        elif apparent > self.max_apparent:
            self.reason = (f"output limit: {_human_bytes(apparent)} apparent (sparse) size in outputs/ "
                           f"(limit {_human_bytes(self.max_apparent)})")
        else:
            return False
        self.exceeded = True
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            # the walk stops just past the file limit: a flood of entries costs the watch nothing more
            if self._check(self.max_files):
                self.killed = True
                try:
                    self.api.kill(self.container_id)
                except Exception:  # noqa: BLE001 - it may have exited meanwhile
                    pass
                return

    def final_check(self) -> bool:
        """Measure once more after the container exited (exact count up to :attr:`COUNT_CAP`)."""
        self._stop.set()
        self._thread.join(timeout=5)
        if self.exceeded:
            first = self.reason
            if not self._check(self.COUNT_CAP):  # the exact figures for the reason, when still there
                self.reason = first
            self.exceeded = True
            return True
        return self._check(self.COUNT_CAP)

    def __enter__(self) -> "_OutputWatch":
        self._thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class _BoundedLog:
    """Keeps the first and last ``keep`` bytes of a stream and counts the rest."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.head = bytearray()
        self.tail: collections.deque[bytes] = collections.deque()
        self.tail_bytes = 0
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.keep - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        self.tail.append(chunk)
        self.tail_bytes += len(chunk)
        while self.tail and self.tail_bytes - len(self.tail[0]) >= self.keep:
            self.tail_bytes -= len(self.tail.popleft())

    def texts(self) -> tuple[str, str]:
        tail = b"".join(self.tail)[-self.keep:] if self.tail else b""
        return bytes(self.head).decode("utf-8", "replace"), tail.decode("utf-8", "replace")


def _pump(sock: Any, out: _BoundedLog, err: _BoundedLog) -> None:
    from docker.utils.socket import frames_iter

    try:
        for stream_id, data in frames_iter(sock, False):
            (err if stream_id == 2 else out).feed(data)
    except Exception:  # noqa: BLE001 - the connection closes when the container is removed
        pass


def _close_attach(sock: Any) -> None:
    """Close an attach socket and the HTTP response under it (no ResourceWarning)."""
    raw = getattr(sock, "_sock", None)
    resp = getattr(sock, "_response", None)
    for closer in (getattr(resp, "close", None), sock.close, getattr(raw, "close", None)):
        if closer is not None:
            try:
                closer()
            except Exception:  # noqa: BLE001
                pass


# --------------------------------------------------------------------------------------------
# core locks


class _CoreLocks:
    """Exclusive host-wide flocks on the pinned cores (two timed runs never share a core)."""

    def __init__(self, cores: list[int]) -> None:
        self.cores = cores
        self._fds: list[int] = []

    def __enter__(self) -> "_CoreLocks":
        try:
            CORE_LOCK_DIR.mkdir(parents=True, exist_ok=True)
            os.chmod(CORE_LOCK_DIR, 0o1777)
        except OSError:
            pass
        for core in sorted(self.cores):  # a fixed order: no deadlock between workers
            try:
                fd = os.open(CORE_LOCK_DIR / f"cpu{core}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            except OSError:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._fds.append(fd)
        return self

    def __exit__(self, *exc: Any) -> None:
        for fd in self._fds:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        self._fds.clear()


# --------------------------------------------------------------------------------------------
# the case run


def container_params(*, image_id: str, inputs_dir: Path, outputs_dir: Path, profile: SandboxProfile,
                     user: str | None, labels: dict[str, str]) -> dict[str, Any]:
    """The exact keyword arguments given to ``client.containers.create`` for one case (JSON-safe)."""
    cores = profile.pinned_cores()
    cpus = min(profile.cpus, float(len(cores)))
    env = {"HOME": "/tmp", "TMPDIR": "/tmp"}
    params: dict[str, Any] = {
        "image": image_id,
        "command": list(COMMAND),
        "detach": True,
        "user": user,
        "environment": env,
        "network_mode": "none",
        "mem_limit": profile.memory_bytes,
        "memswap_limit": profile.memory_bytes,
        "cpu_period": 100_000,
        "cpu_quota": int(round(cpus * 100_000)),
        "cpuset_cpus": format_cpuset(cores),
        "pids_limit": profile.pids_limit,
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={profile.tmpfs_bytes},mode=1777"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "init": True,
        "ipc_mode": "private",
        "volumes": {
            str(inputs_dir): {"bind": INPUTS_MOUNT, "mode": "ro"},
            str(outputs_dir): {"bind": OUTPUTS_MOUNT, "mode": "rw"},
        },
        "labels": dict(labels),
        # output is read live from the attach stream, head and tail only: nothing is logged to disk
        "log_config": {"type": "none", "config": {}},
    }
    if user is None:
        del params["user"]
    if profile.cgroup_parent:
        params["cgroup_parent"] = "/" + profile.cgroup_parent.strip("/")
    if profile.gpus:
        params["device_requests"] = [{"driver": "nvidia", "device_ids": list(profile.gpus), "capabilities": [["gpu"]]}]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(len(profile.gpus)))
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(profile.gpus)
    return params


def _create_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(params)
    if "device_requests" in kwargs:
        from docker.types import DeviceRequest

        kwargs["device_requests"] = [DeviceRequest(**r) for r in kwargs["device_requests"]]
    if "log_config" in kwargs:
        from docker.types import LogConfig

        kwargs["log_config"] = LogConfig(**kwargs["log_config"])
    return kwargs


def _prepare_dirs(input_file: Path, out_dir: Path, scratch: Path | None) -> tuple[Path, Path]:
    work = Path(tempfile.mkdtemp(prefix="segarena-case-", dir=scratch))
    inputs = work / "inputs"
    inputs.mkdir()
    dest = inputs / input_file.name
    shutil.copyfile(input_file, dest)
    os.chmod(dest, 0o644)
    os.chmod(inputs, 0o755)
    os.chmod(work, 0o755)
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        raise ValueError(f"output directory {out_dir} is not empty")
    os.chmod(out_dir, 0o777)  # writable by whatever uid the container runs as
    return work, inputs


def run_case(client: Any, *, image_id: str, input_file: Path, out_dir: Path, profile: SandboxProfile,
             labels: dict[str, str] | None = None, image_user_is_root: bool | None = None,
             scratch_dir: Path | None = None, run_user: tuple[str | None, str] | None = None) -> CaseRun:
    """Run ``image_id`` on one case file; the prediction is expected at ``out_dir/<input name>``.

    Returns a :class:`CaseRun` (status ok, timeout, oom, crash or no_output; the output's content
    is checked by :func:`check_output`). Raises :class:`SandboxInfraError` when the engine fails.
    The container is always removed.

    ``run_user`` is :func:`resolve_user`'s answer for the image (a runner resolves it once per run);
    without it, it is resolved here. ``image_user_is_root`` is accepted for older callers and ignored:
    the numeric resolution decides.
    """
    import docker
    import requests

    del image_user_is_root  # superseded by resolve_user (a name or "00" can be uid 0)
    input_file, out_dir = Path(input_file), Path(out_dir)
    labels = {LABEL_WORKER: worker_identity(), **(labels or {})}
    try:
        if run_user is None:
            run_user = resolve_user(client, image_id, allow_root=profile.allow_root, labels=labels)
    except docker.errors.ImageNotFound as exc:
        raise SandboxInfraError(f"image {image_id} is not loaded on this worker") from exc
    except Exception as exc:  # noqa: BLE001
        if _is_engine_error(exc):
            raise SandboxInfraError(f"Docker engine error: {exc}") from exc
        raise
    user, user_note = run_user
    work, inputs = _prepare_dirs(input_file, out_dir, scratch_dir)
    params = container_params(image_id=image_id, inputs_dir=inputs, outputs_dir=out_dir, profile=profile,
                              user=user, labels=labels)
    result = CaseRun(status="crash", container_params=params, user=user_note)
    api = client.api
    container_id: str | None = None
    out_log, err_log = _BoundedLog(profile.log_keep_bytes), _BoundedLog(profile.log_keep_bytes)
    meter = CgroupMeter(profile.cgroup_parent)
    timed_out = False
    try:
        with ExitStack() as stack:
            stack.enter_context(_CoreLocks(profile.pinned_cores()))
            try:
                container = client.containers.create(**_create_kwargs(params))
                container_id = container.id
                attach = api.attach_socket(container_id, params={"stdout": 1, "stderr": 1, "stream": 1})
            except docker.errors.APIError as exc:
                if _is_engine_error(exc):
                    raise SandboxInfraError(f"Docker engine error creating the container: {exc}") from exc
                result.reason = f"the container could not be created: {exc.explanation or exc}"
                return result
            stack.callback(_close_attach, attach)
            pump = threading.Thread(target=_pump, args=(attach, out_log, err_log), name="case-logs", daemon=True)
            pump.start()
            meter.before_start()
            t0 = time.monotonic()
            try:
                api.start(container_id)
            except docker.errors.APIError as exc:
                if _is_engine_error(exc):
                    raise SandboxInfraError(f"Docker engine error starting the container: {exc}") from exc
                result.runtime_s = time.monotonic() - t0
                result.reason = f"the container did not start: {exc.explanation or exc}"
                return result
            meter.poll(container_id, profile.pids_limit)
            watch = stack.enter_context(_OutputWatch(api, container_id, out_dir, profile.max_output_bytes,
                                                     max_files=profile.max_output_files))
            try:
                api.wait(container_id, timeout=profile.timeout_s)
                result.runtime_s = time.monotonic() - t0
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
                elapsed = time.monotonic() - t0
                if elapsed < profile.timeout_s * 0.99:
                    raise SandboxInfraError(f"lost the Docker engine while waiting: {exc}") from exc
                timed_out = True
                result.runtime_s = elapsed
                try:
                    api.kill(container_id)
                except docker.errors.APIError:
                    pass  # it exited meanwhile
                api.wait(container_id, timeout=60)
            pump.join(timeout=10)
            state = api.inspect_container(container_id)["State"]
            watch.final_check()
        peak, cpu_s, pids_hit, oom_seen = meter.result()
        result.peak_memory_bytes, result.cpu_s = peak, cpu_s
        result.exit_code = state.get("ExitCode")
        oom = bool(state.get("OOMKilled")) or oom_seen
        if watch.exceeded:
            result.status = "invalid_output"
            result.reason = (f"{watch.reason}: " + ("the container was stopped" if watch.killed else "found when it exited")
                             + "; write only outputs/<case name>.npz")
        elif timed_out:
            result.status = "timeout"
            result.reason = f"time limit exceeded ({profile.timeout_s:g} s): the container was stopped"
        elif oom:
            result.status = "oom"
            result.reason = f"memory limit exceeded ({profile.memory_text}): the container was stopped"
        elif result.exit_code != 0:
            result.status = "crash"
            why = f"predict.sh exited with code {result.exit_code}"
            if pids_hit:
                why += f"; it reached the process limit ({profile.pids_limit} processes)"
            elif result.exit_code == 137:
                why += " (killed)"
            result.reason = why + "; see its stderr"
        else:
            out = out_dir / input_file.name
            st = None
            try:
                st = os.lstat(out)
            except OSError:
                pass
            if st is None:
                written = sorted(p.name for p in out_dir.iterdir())[:5]
                result.status = "no_output"
                result.reason = (f"no output file outputs/{input_file.name}"
                                 + (f" (found: {', '.join(written)})" if written else " (the output directory is empty)"))
            elif not stat.S_ISREG(st.st_mode):
                result.status = "invalid_output"
                result.reason = f"outputs/{input_file.name} is not a regular file"
            elif st.st_size > profile.max_output_bytes:
                result.status = "invalid_output"
                result.reason = f"outputs/{input_file.name} is larger than {_human_bytes(profile.max_output_bytes)}"
            else:
                result.status = "ok"
                result.output_path = out
        return result
    except SandboxInfraError:
        raise
    except Exception as exc:  # noqa: BLE001
        if _is_engine_error(exc):
            raise SandboxInfraError(f"Docker engine error: {exc}") from exc
        raise
    finally:
        meter.result()  # stops a poller
        result.stdout_head, result.stdout_tail = out_log.texts()
        result.stderr_head, result.stderr_tail = err_log.texts()
        result.stdout_bytes, result.stderr_bytes = out_log.total, err_log.total
        if container_id is not None:
            try:
                api.remove_container(container_id, force=True)
            except Exception:  # noqa: BLE001 - already gone, or the reaper will remove it
                pass
        shutil.rmtree(work, ignore_errors=True)


def check_output(case_run: CaseRun, *, expected_shape: tuple[int, ...], max_bytes: int | None = None):
    """Load and validate the prediction of an ``ok`` case; returns ``segs`` or None.

    On a bad prediction the case becomes ``invalid_output`` with the loader's message.
    """
    from evaluator.io import CaseFormatError, load_prediction

    if case_run.status != "ok" or case_run.output_path is None:
        return None
    kwargs = {"expected_shape": tuple(expected_shape)}
    if max_bytes is not None:
        kwargs["max_bytes"] = max_bytes
    try:
        return load_prediction(case_run.output_path, **kwargs)
    except CaseFormatError as exc:
        case_run.status = "invalid_output"
        case_run.reason = f"invalid prediction: {exc}"
        return None


def with_overrides(profile: SandboxProfile, **changes: Any) -> SandboxProfile:
    """A copy of ``profile`` with ``changes``."""
    return replace(profile, **changes)
