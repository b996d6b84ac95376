"""What a case container is given (:class:`SandboxProfile`: caps and isolation) and what it did
(:class:`CaseRun`), and the fixed parts of the submission contract (mounts, command, labels, user)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .host import format_cpuset, online_cpus, parse_cpuset

LABEL_RUN = "segarena.run"
LABEL_CASE = "segarena.case"
LABEL_WORKER = "segarena.worker"
LABEL_DEPLOYMENT = "segarena.deployment"  # which database the run belongs to (engines may be shared)
INPUTS_MOUNT = "/workspace/inputs"
OUTPUTS_MOUNT = "/workspace/outputs"
NONROOT_USER = "1000:1000"
COMMAND = ["/bin/sh", "-c", "sh predict.sh"]
LOG_KEEP_BYTES = 64 * 1024


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


_human_bytes = human_bytes


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
    def from_track(cls, track: Any, settings: Any, **overrides: Any) -> SandboxProfile:
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
    def from_caps(cls, caps: dict[str, Any], settings: Any, **overrides: Any) -> SandboxProfile:
        """The profile of a shard spec's ``caps`` (docs/worker-protocol.md) on this worker (``settings``):
        the same caps as :meth:`from_track`, the output bounds from the caps where they name them."""
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
        return human_bytes(self.memory_bytes)

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
    lock_wait_s: float = 0.0  # waited for the pinned cores' host-wide locks (another timed run held them)
    precreated: bool = False  # the container was created ahead (prepare_container), not in this call

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def log_text(self, stream: str) -> str:
        """Head and tail of ``stream`` ('stdout' or 'stderr') with a note of what was cut."""
        head: str = getattr(self, f"{stream}_head")
        tail: str = getattr(self, f"{stream}_tail")
        total: int = getattr(self, f"{stream}_bytes")
        if not tail:
            return head
        kept = len(head.encode()) + len(tail.encode())
        return f"{head}\n[... {max(0, total - kept)} bytes of {stream} cut ...]\n{tail}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["output_path"] = str(self.output_path) if self.output_path else None
        return d


def with_overrides(profile: SandboxProfile, **changes: Any) -> SandboxProfile:
    """A copy of ``profile`` with ``changes``."""
    return replace(profile, **changes)
