"""One case in a container: the exact ``containers.create`` parameters (isolation and caps), the case
directories, and :func:`run_case`, which starts, times, watches, measures and removes the container and
hands what it saw to the pure :func:`worker.sandbox.verdict.exit_verdict`."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .cgroups import CgroupMeter
from .engine import SandboxInfraError, _is_engine_error, resolve_user
from .host import CoreLocks, format_cpuset, worker_identity
from .output import BoundedLog, OutputWatch, close_attach, observe_output, pump_logs
from .profile import COMMAND, INPUTS_MOUNT, LABEL_WORKER, OUTPUTS_MOUNT, CaseRun, SandboxProfile
from .verdict import ExitFacts, exit_verdict


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
        "cpu_quota": round(cpus * 100_000),
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


def _create(client: Any, params: dict[str, Any]) -> str:
    """Create the container from ``params`` (what ``client.containers.create`` does, without the inspect it adds:
    one engine round trip less per case); its id."""
    from docker.models.containers import _create_container_args

    kwargs = _create_kwargs(params)
    kwargs["version"] = client.api._version
    return str(client.api.create_container(**_create_container_args(kwargs))["Id"])


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


def _resolve_user(client: Any, image_id: str, profile: SandboxProfile,
                  labels: dict[str, str]) -> tuple[str | None, str]:
    """:func:`resolve_user` with the engine's failures as :class:`SandboxInfraError`."""
    import docker

    try:
        return resolve_user(client, image_id, allow_root=profile.allow_root, labels=labels)
    except docker.errors.ImageNotFound as exc:
        raise SandboxInfraError(f"image {image_id} is not loaded on this worker") from exc
    except Exception as exc:
        if _is_engine_error(exc):
            raise SandboxInfraError(f"Docker engine error: {exc}") from exc
        raise


def _wait(api: Any, container_id: str, timeout_s: float, t0: float) -> tuple[float, bool]:
    """Wait for the started container's exit, at most ``timeout_s`` from ``t0``; stop it at the limit.
    Returns (runtime, timed out)."""
    import docker
    import requests

    try:
        api.wait(container_id, timeout=timeout_s)
        return time.monotonic() - t0, False
    except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
        elapsed = time.monotonic() - t0
        if elapsed < timeout_s * 0.99:
            raise SandboxInfraError(f"lost the Docker engine while waiting: {exc}") from exc
        try:
            api.kill(container_id)
        except docker.errors.APIError:
            pass  # it exited meanwhile
        api.wait(container_id, timeout=60)
        return elapsed, True


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

    del image_user_is_root  # superseded by resolve_user (a name or "00" can be uid 0)
    input_file, out_dir = Path(input_file), Path(out_dir)
    labels = {LABEL_WORKER: worker_identity(), **(labels or {})}
    user, user_note = run_user if run_user is not None else _resolve_user(client, image_id, profile, labels)
    work, inputs = _prepare_dirs(input_file, out_dir, scratch_dir)
    params = container_params(image_id=image_id, inputs_dir=inputs, outputs_dir=out_dir, profile=profile,
                              user=user, labels=labels)
    result = CaseRun(status="crash", container_params=params, user=user_note)
    api = client.api
    container_id: str | None = None
    out_log, err_log = BoundedLog(profile.log_keep_bytes), BoundedLog(profile.log_keep_bytes)
    meter = CgroupMeter(profile.cgroup_parent)
    try:
        with ExitStack() as stack:
            stack.enter_context(CoreLocks(profile.pinned_cores()))
            try:
                container_id = _create(client, params)
                attach = api.attach_socket(container_id, params={"stdout": 1, "stderr": 1, "stream": 1})
            except docker.errors.APIError as exc:
                if _is_engine_error(exc):
                    raise SandboxInfraError(f"Docker engine error creating the container: {exc}") from exc
                result.reason = f"the container could not be created: {exc.explanation or exc}"
                return result
            stack.callback(close_attach, attach)
            pump = threading.Thread(target=pump_logs, args=(attach, out_log, err_log), name="case-logs", daemon=True)
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
            watch = stack.enter_context(OutputWatch(api, container_id, out_dir, profile.max_output_bytes,
                                                     max_files=profile.max_output_files))
            result.runtime_s, timed_out = _wait(api, container_id, profile.timeout_s, t0)
            pump.join(timeout=10)
            state = api.inspect_container(container_id)["State"]
            watch.final_check()
        peak, cpu_s, pids_hit, oom_seen = meter.result()
        result.peak_memory_bytes, result.cpu_s = peak, cpu_s
        result.exit_code = state.get("ExitCode")
        oom = bool(state.get("OOMKilled")) or oom_seen
        decided = watch.exceeded or timed_out or oom or result.exit_code != 0  # the prediction is not looked at
        kind, size, listing = ("missing", 0, ()) if decided else observe_output(out_dir, input_file.name)
        facts = ExitFacts(exit_code=result.exit_code, timed_out=timed_out, oom_killed=oom, pids_hit=pids_hit,
                          output_limit=watch.reason if watch.exceeded else "", output_limit_killed=watch.killed,
                          output_kind=kind, output_size=size, output_listing=listing)
        verdict = exit_verdict(facts, profile, input_file.name)
        result.status, result.reason = verdict.status, verdict.reason
        if verdict.ok:
            result.output_path = out_dir / input_file.name
        return result
    except SandboxInfraError:
        raise
    except Exception as exc:
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
            except Exception:
                pass
        shutil.rmtree(work, ignore_errors=True)
