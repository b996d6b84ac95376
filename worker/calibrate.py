"""Host facts and the calibration workload an execution worker reports at start (``POST /api/worker/hello``).

The calibration is fixed and deterministic: float64 matrix products (512 x 512, seeded) and a sort of
4 million seeded floats, in a fresh Python process limited to one BLAS/OpenMP thread and pinned to one
core of the worker's CPU set (its first). It is run ``repeats`` times and the fastest time is
reported (``calibration_s``, about 0.5-1 s on a current core): workers of one queue are meant to be
one hardware class, and the API flags a worker far from its queue's median.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
from typing import Any

from . import sandbox as sb

__all__ = ["calibrate", "gpu_model", "docker_version", "host_facts", "hello_payload", "WORKLOAD"]

log = logging.getLogger(__name__)

WORKLOAD = r"""
import time, numpy as np
rng = np.random.default_rng(20240601)
a = rng.random((512, 512))
b = rng.random((512, 512))
v = rng.random(4_000_000)
best = None
check = 0.0
for _ in range(REPEATS):
    t0 = time.perf_counter()
    c = a
    for _ in range(8):
        c = (c @ b) * (1.0 / 512.0)
    s = np.sort(v, kind="quicksort")
    dt = time.perf_counter() - t0
    check = float(c[0, 0]) + float(s[len(s) // 2])
    best = dt if best is None else min(best, dt)
print(f"{best:.6f} {check:.12g}")
"""

_SINGLE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                   "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}


def calibrate(config: Any = None, *, repeats: int = 3, timeout_s: float = 120.0) -> float:
    """Seconds of the fixed workload on one core (the fastest of ``repeats``); 0.0 when it cannot run."""
    cpuset = (getattr(config, "worker_cpus", "") or "").strip() if config is not None else ""
    cores = sb.parse_cpuset(cpuset) if cpuset else sb.online_cpus()
    core = cores[0] if cores else None
    env = {**os.environ, **_SINGLE_THREAD}

    def pin() -> None:
        if core is not None and hasattr(os, "sched_setaffinity"):
            try:
                os.sched_setaffinity(0, {core})
            except OSError:
                pass

    code = WORKLOAD.replace("REPEATS", str(max(1, int(repeats))))
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             timeout=timeout_s, preexec_fn=pin, check=True)
        return float(out.stdout.split()[0])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as exc:
        log.warning("calibration failed: %s", exc)
        return 0.0


def gpu_model(config: Any = None) -> str:
    """The model of this worker's (first owned) GPU from nvidia-smi; '' without GPUs or nvidia-smi."""
    owned = [g.strip() for g in (getattr(config, "worker_gpus", "") or "").split(",") if g.strip()]
    exe = shutil.which("nvidia-smi")
    if not exe:
        return ""
    cmd = [exe, "--query-gpu=name", "--format=csv,noheader"]
    if owned:
        cmd.insert(1, f"--id={owned[0]}")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=15, check=True)
    except (subprocess.SubprocessError, OSError):
        return ""
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return lines[0][:200] if lines else ""


def docker_version(docker: Any) -> str:
    """The engine's version ('' when the engine cannot be asked)."""
    try:
        return str(docker.version().get("Version", ""))[:100]
    except Exception:
        return ""


def _cores(config: Any) -> int:
    spec = (getattr(config, "worker_cpus", "") or "").strip()
    if spec:
        try:
            return len(sb.parse_cpuset(spec))
        except ValueError:
            pass
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def host_facts(config: Any, docker: Any = None) -> dict[str, Any]:
    """host, pid, cpu model, cores (of the worker's CPU set), GPU model, docker version."""
    return {"host": socket.gethostname()[:200], "pid": os.getpid(), "cpu_model": sb.cpu_model()[:200],
            "cores": _cores(config), "gpu_model": gpu_model(config),
            "docker_version": docker_version(docker) if docker is not None else ""}


def hello_payload(config: Any, docker: Any = None, *, queues: list[str] | None = None,
                  calibration_s: float | None = None) -> dict[str, Any]:
    """The body of ``POST /api/worker/hello``."""
    if calibration_s is None:
        calibration_s = calibrate(config) if getattr(config, "calibrate", True) else 0.0
    return {"name": config.worker_name, "queues": list(queues if queues is not None else config.queues),
            **host_facts(config, docker), "calibration_s": round(float(calibration_s), 6)}
