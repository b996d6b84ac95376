"""The Docker sandbox: run one case of an untrusted submission image under caps, timed and measured.

A package along its seams; every public name is importable from ``worker.sandbox``:

* :mod:`.profile` — :class:`SandboxProfile` (caps, from a track or a shard's caps), :class:`CaseRun`, contract constants;
* :mod:`.host` — cores and CPU sets, CPU model, worker identity, deployment label, per-core locks;
* :mod:`.engine` — the Docker client, engine-vs-image errors, image loading, the user a container runs as;
* :mod:`.cgroups` — CPU time and peak memory (:class:`CgroupMeter`), dead workers' cgroup parents;
* :mod:`.container` — the container parameters and :func:`run_case`;
* :mod:`.output` — logs (head/tail), the bounded outputs/ directory, :func:`check_output`;
* :mod:`.verdict` — the exit verdict, a pure function (:func:`exit_verdict`): exit/OOM/timeout/output -> status + reason.

The submission contract is the CVPR 2024 one (docs/architecture.md): a fresh input directory holding
only the case's file, mounted read-only at ``/workspace/inputs``; an empty output directory at
``/workspace/outputs``; the command ``/bin/sh -c "sh predict.sh"`` in the image's working directory.
Ground truth never enters the container.

Isolation (every container): no network (``network_disabled``: no network sandbox at all, only loopback;
the usual ``/etc/hosts`` bind-mounted read-only); memory limit = memory+swap limit (no swap);
CPU quota and a pinned cpuset; a pids limit; read-only root with a size-capped tmpfs at ``/tmp`` and
``HOME=/tmp``; all capabilities dropped; ``no-new-privileges``; an init process (docker-init); no
Docker socket and no host path besides the two case directories and the hosts file; SegArena's labels
(``segarena.run``, ``segarena.case``, ``segarena.worker``) so the reaper can find orphans.

Users. A track that forbids root (``Track.allow_root = False``, the default) runs an image whose
config ``User`` is empty or root as the fixed non-root ``1000:1000`` instead of refusing it: the
real 2024 images ran as root and must run unchanged. An image that declares a non-root user keeps
it. The output directory is made writable by any uid (mode 0777, a fresh directory per case), so
whichever user runs can write ``/workspace/outputs`` (MedSAM issue #211).

Measurement. Wall time is a monotonic clock from just before the container is started until the
engine reports its exit: it includes container start-up and model loading, as the reference timed
it; image loading, directory set-up and container creation/removal are outside the timer (the span is from just
before the engine's ``start`` call to the return of the one blocking ``wait`` call, the same for every image;
the wait for the pinned cores' locks is before it and reported apart as ``CaseRun.lock_wait_s``). Creation can
happen ahead (:func:`prepare_container`, identical parameters) and removal in the background
(``run_case(remove="async")``): neither touches the timed span. CPU time
and peak memory come from a per-worker cgroup parent (cgroup v1, cgroupfs driver: the engine
creates ``/sys/fs/cgroup/<controller>/<parent>/<container id>``; the parent outlives the container,
so ``memory.max_usage_in_bytes`` — reset before each case — and the ``cpuacct.usage`` difference
are exact even for a process killed at its peak). Where the parent cannot be written (not root,
cgroup v2, systemd driver) the container's own cgroup is polled while it runs (a lower bound).

Runtime fidelity. One container at a time per worker (the worker runs with concurrency 1); the
container is pinned to the first ``ceil(cpus)`` cores of the worker's CPU set
(``settings.worker_cpus``, default all online cores) and takes an exclusive host-wide lock on each
of those cores (``flock`` under :data:`worker.sandbox.host.CORE_LOCK_DIR`) for the duration of the case, so two timed
runs on one host never share pinned cores even when workers are misconfigured. Several workers on one
host should nevertheless be given disjoint ``SEGARENA_WORKER_CPUS`` (e.g. ``0-3`` and ``4-7``),
otherwise they simply wait for each other. Workers running in separate containers that share one
host engine must share :data:`CORE_LOCK_DIR` (bind-mount it) for the lock to span them.
"""

from __future__ import annotations

from .cgroups import CgroupMeter, cleanup_cgroup_parents
from .container import PreparedContainer, container_params, flush_removals, prepare_container, remove_later, run_case
from .engine import (ImageLoadError, SandboxInfraError, _is_engine_error, forget_docker_client, get_docker_client,
                     image_runs_as_root, load_image, resolve_user)
from .host import (CORE_LOCK_DIR, CoreLocks, cpu_model, deployment_id, format_cpuset, online_cpus, parse_cpuset,
                   pid_alive, worker_identity)
from .output import BoundedLog, OutputWatch, _BoundedLog, _OutputWatch, check_output, observe_output
from .profile import (COMMAND, INPUTS_MOUNT, LABEL_CASE, LABEL_DEPLOYMENT, LABEL_RUN, LABEL_WORKER, LOG_KEEP_BYTES,
                      NONROOT_USER, OUTPUTS_MOUNT, CaseRun, SandboxProfile, human_bytes, with_overrides)
from .verdict import ExitFacts, Verdict, exit_verdict

__all__ = [
    "SandboxProfile", "CaseRun", "SandboxInfraError", "run_case", "check_output", "get_docker_client",
    "forget_docker_client", "load_image", "ImageLoadError", "image_runs_as_root", "resolve_user", "worker_identity",
    "cpu_model", "online_cpus", "cleanup_cgroup_parents", "parse_cpuset", "format_cpuset", "CgroupMeter", "LABEL_RUN",
    "LABEL_CASE", "LABEL_WORKER", "LABEL_DEPLOYMENT", "deployment_id", "CORE_LOCK_DIR", "NONROOT_USER", "INPUTS_MOUNT",
    "OUTPUTS_MOUNT", "COMMAND", "LOG_KEEP_BYTES", "container_params", "with_overrides", "pid_alive", "CoreLocks",
    "BoundedLog", "OutputWatch", "observe_output", "human_bytes", "ExitFacts", "Verdict", "exit_verdict",
    "_is_engine_error", "_BoundedLog", "_OutputWatch", "PreparedContainer", "prepare_container", "remove_later",
    "flush_removals",
]
