"""Host facts of an execution host: its cores (CPU sets), CPU model, identity, deployment label, live
processes, and the host-wide per-core locks that keep two timed case runs off one core."""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import socket
from pathlib import Path
from typing import Any

#: Host-wide directory of per-core lock files (see :class:`CoreLocks`).
CORE_LOCK_DIR = Path(os.environ.get("SEGARENA_CORE_LOCK_DIR", "/tmp/segarena-core-locks"))


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
    return platform.processor() or platform.machine()


def worker_identity() -> str:
    """'host:pid' of this worker process (the value of the segarena.worker label)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def deployment_id(settings: Any) -> str:
    """A short stable id of the deployment for container labels: ``settings.deployment_id`` where the
    settings name one (an execution host's :class:`worker.config.WorkerConfig`), else a hash of the
    database URL (the API's settings)."""
    explicit = getattr(settings, "deployment_id", None)
    if isinstance(explicit, str) and explicit:
        return explicit
    return hashlib.sha256(settings.database_url.encode()).hexdigest()[:16]


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CoreLocks:
    """Exclusive host-wide flocks on the pinned cores (two timed runs never share a core)."""

    def __init__(self, cores: list[int]) -> None:
        self.cores = cores
        self._fds: list[int] = []

    def __enter__(self) -> CoreLocks:
        lock_dir = CORE_LOCK_DIR
        try:
            lock_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(lock_dir, 0o1777)
        except OSError:
            pass
        for core in sorted(self.cores):  # a fixed order: no deadlock between workers
            try:
                fd = os.open(lock_dir / f"cpu{core}.lock", os.O_RDWR | os.O_CREAT, 0o666)
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


_CoreLocks = CoreLocks  # the older private name
