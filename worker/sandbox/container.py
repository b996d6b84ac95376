"""One case in a container: the exact ``containers.create`` parameters (isolation and caps), the case
directories, and :func:`run_case`, which starts, times, watches, measures and removes the container and
hands what it saw to the pure :func:`worker.sandbox.verdict.exit_verdict`.

Overhead around the container (issues 12 and 14). The engine calls outside the timed span are taken off the
critical path without changing what runs: :func:`prepare_container` creates (and attaches to) the container of
a case ahead of time, with the same :func:`container_params` as an on-demand create (``run_case`` compares
them and creates afresh on any difference); its input directory is bind-mounted empty and the input file is
copied in when the case runs. ``remove="async"`` hands the finished container to a bounded background
remover (:func:`remove_later`; full queue: removed at once; :func:`flush_removals` waits for it; the
periodic sweep in worker/housekeeping.py removes what a dead worker left). The timed span is unchanged:
from just before the engine's ``start`` call to the return of the one blocking ``wait`` call.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cgroups import CgroupMeter
from .engine import SandboxInfraError, _is_engine_error, resolve_user
from .host import CoreLocks, format_cpuset, worker_identity
from .output import BoundedLog, OutputWatch, close_attach, observe_output, pump_logs
from .profile import COMMAND, INPUTS_MOUNT, LABEL_WORKER, OUTPUTS_MOUNT, CaseRun, SandboxProfile
from .verdict import ExitFacts, exit_verdict

log = logging.getLogger(__name__)


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
        # no network at all: the engine sets up no network sandbox (libnetwork's prestart hook and its namespace
        # work cost ~0.08 s of the timed span and ~0.09 s of CPU per case); the container gets a fresh network
        # namespace with only loopback (up), as with "none", and the usual /etc/hosts is bind-mounted below
        "network_disabled": True,
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
            # the engine writes no /etc/hosts without a network sandbox: "localhost" must still resolve
            str(hosts_file(inputs_dir)): {"bind": "/etc/hosts", "mode": "ro"},
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


# what the engine writes as /etc/hosts for a container with network "none" (loopback only)
HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def hosts_file(inputs_dir: Path) -> Path:
    """The case's /etc/hosts (mounted read-only), beside its inputs/ in the work directory."""
    return Path(inputs_dir).parent / "hosts"


def _make_dirs(out_dir: Path, scratch: Path | None) -> tuple[Path, Path]:
    """A fresh work directory with an empty inputs/ (mounted read-only), the case's /etc/hosts and the empty,
    any-uid-writable ``out_dir``."""
    work = Path(tempfile.mkdtemp(prefix="segarena-case-", dir=scratch))
    inputs = work / "inputs"
    inputs.mkdir()
    os.chmod(inputs, 0o755)
    hosts = hosts_file(inputs)
    hosts.write_text(HOSTS)
    os.chmod(hosts, 0o644)
    os.chmod(work, 0o755)
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        shutil.rmtree(work, ignore_errors=True)
        raise ValueError(f"output directory {out_dir} is not empty")
    os.chmod(out_dir, 0o777)  # writable by whatever uid the container runs as
    return work, inputs


def _copy_input(input_file: Path, inputs: Path) -> None:
    dest = inputs / input_file.name
    shutil.copyfile(input_file, dest)
    os.chmod(dest, 0o644)


def _prepare_dirs(input_file: Path, out_dir: Path, scratch: Path | None) -> tuple[Path, Path]:
    work, inputs = _make_dirs(out_dir, scratch)
    _copy_input(input_file, inputs)
    return work, inputs


# -- removal off the critical path ---------------------------------------------------------------------------------
_REMOVE_QUEUE_MAX = 16  # finished containers waiting for removal; more: the caller removes synchronously


class _Remover:
    """One daemon thread removing finished containers (``force=True``) in order; a bounded queue."""

    def __init__(self) -> None:
        self.q: queue.Queue[tuple[Any, str]] = queue.Queue(maxsize=_REMOVE_QUEUE_MAX)
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def submit(self, api: Any, container_id: str) -> bool:
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="sandbox-remover", daemon=True)
                self.thread.start()
        try:
            self.q.put_nowait((api, container_id))
            return True
        except queue.Full:
            return False

    def _run(self) -> None:
        while True:
            api, cid = self.q.get()
            try:
                api.remove_container(cid, force=True)
            except Exception as exc:  # gone already, or the engine failed: the housekeeping sweep retries
                log.debug("background removal of %s failed: %s", cid[:12], exc)
            finally:
                self.q.task_done()

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.q.all_tasks_done:
            while self.q.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.q.all_tasks_done.wait(left)
        return True


_remover = _Remover()


def remove_later(api: Any, container_id: str) -> None:
    """Remove the (exited or created) container on the background remover; at once when its queue is full."""
    if not _remover.submit(api, container_id):
        try:
            api.remove_container(container_id, force=True)
        except Exception:
            pass


def flush_removals(timeout: float = 30.0) -> bool:
    """Wait until every container handed to :func:`remove_later` is removed; False at the timeout."""
    return _remover.flush(timeout)


# -- creating ahead ------------------------------------------------------------------------------------------------
@dataclass
class PreparedContainer:
    """A case container created (and attached to) ahead of its run by :func:`prepare_container`; never started."""

    api: Any
    container_id: str
    params: dict[str, Any]
    work: Path
    inputs: Path
    out_dir: Path
    attach: Any
    pump: threading.Thread
    out_log: BoundedLog
    err_log: BoundedLog
    user_note: str
    used: bool = field(default=False)

    def discard(self) -> None:
        """Not run after all (the case stopped, or its parameters differ): remove it in the background."""
        if self.used:
            return
        self.used = True
        close_attach(self.attach)
        remove_later(self.api, self.container_id)
        shutil.rmtree(self.work, ignore_errors=True)


def _create_attached(client: Any, params: dict[str, Any], keep: int) -> tuple[str, Any, threading.Thread,
                                                                                BoundedLog, BoundedLog]:
    """Create the container and attach to its output before it starts (a pump thread reads the stream)."""
    api = client.api
    container_id = _create(client, params)
    try:
        attach = api.attach_socket(container_id, params={"stdout": 1, "stderr": 1, "stream": 1})
    except BaseException:
        remove_later(api, container_id)
        raise
    out_log, err_log = BoundedLog(keep), BoundedLog(keep)
    pump = threading.Thread(target=pump_logs, args=(attach, out_log, err_log), name="case-logs", daemon=True)
    pump.start()
    return container_id, attach, pump, out_log, err_log


def prepare_container(client: Any, *, image_id: str, out_dir: Path, profile: SandboxProfile,
                      labels: dict[str, str] | None = None, scratch_dir: Path | None = None,
                      run_user: tuple[str | None, str]) -> PreparedContainer | None:
    """Create the container of a case ahead of time (while the previous result is uploaded): the same
    :func:`container_params` as :func:`run_case` would create, an empty input directory (the file is copied in
    by ``run_case(prepared=...)``) and an empty ``out_dir``. None when the engine refuses (``run_case`` then
    creates on demand and reports why); raises :class:`SandboxInfraError` when the engine fails."""
    import docker

    out_dir = Path(out_dir)
    labels = {LABEL_WORKER: worker_identity(), **(labels or {})}
    user, user_note = run_user
    work, inputs = _make_dirs(out_dir, scratch_dir)
    params = container_params(image_id=image_id, inputs_dir=inputs, outputs_dir=out_dir, profile=profile,
                              user=user, labels=labels)
    try:
        cid, attach, pump, out_log, err_log = _create_attached(client, params, profile.log_keep_bytes)
    except docker.errors.APIError as exc:
        shutil.rmtree(work, ignore_errors=True)
        if _is_engine_error(exc):
            raise SandboxInfraError(f"Docker engine error creating the container: {exc}") from exc
        return None
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        if _is_engine_error(exc):
            raise SandboxInfraError(f"Docker engine error creating the container: {exc}") from exc
        raise
    return PreparedContainer(api=client.api, container_id=cid, params=params, work=work, inputs=inputs,
                             out_dir=out_dir, attach=attach, pump=pump, out_log=out_log, err_log=err_log,
                             user_note=user_note)


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


def _take_prepared(prepared: PreparedContainer | None, *, image_id: str, input_file: Path, out_dir: Path,
                   profile: SandboxProfile, user: str | None, labels: dict[str, str]) -> PreparedContainer | None:
    """``prepared`` with the case's input copied in when its parameters are exactly those an on-demand create
    would use (same image, user, caps, mounts, labels) and its output directory is still empty; else discarded."""
    if prepared is None:
        return None
    params = None
    if not prepared.used and prepared.out_dir == out_dir:
        params = container_params(image_id=image_id, inputs_dir=prepared.inputs, outputs_dir=out_dir,
                                  profile=profile, user=user, labels=labels)
    if params is None or params != prepared.params or any(out_dir.iterdir()):
        log.warning("a pre-created container does not match its case (%s): created afresh", input_file.name)
        prepared.discard()
        return None
    prepared.used = True
    _copy_input(input_file, prepared.inputs)  # the bind-mounted, still empty input directory
    return prepared


def run_case(client: Any, *, image_id: str, input_file: Path, out_dir: Path, profile: SandboxProfile,
             labels: dict[str, str] | None = None, image_user_is_root: bool | None = None,
             scratch_dir: Path | None = None, run_user: tuple[str | None, str] | None = None,
             prepared: PreparedContainer | None = None, remove: str = "sync") -> CaseRun:
    """Run ``image_id`` on one case file; the prediction is expected at ``out_dir/<input name>``.

    Returns a :class:`CaseRun` (status ok, timeout, oom, crash or no_output; the output's content
    is checked by :func:`check_output`). Raises :class:`SandboxInfraError` when the engine fails.
    The container is always removed: before returning (``remove="sync"``) or by the background remover
    (``remove="async"``: :func:`remove_later`).

    ``run_user`` is :func:`resolve_user`'s answer for the image (a runner resolves it once per run);
    without it, it is resolved here. ``image_user_is_root`` is accepted for older callers and ignored:
    the numeric resolution decides. ``prepared``: a container :func:`prepare_container` created ahead for this
    case; used when its parameters equal the ones this call would create (else discarded, and created here).
    """
    import docker

    del image_user_is_root  # superseded by resolve_user (a name or "00" can be uid 0)
    if remove not in ("sync", "async"):
        raise ValueError(f"remove must be 'sync' or 'async', not {remove!r}")
    input_file, out_dir = Path(input_file), Path(out_dir)
    labels = {LABEL_WORKER: worker_identity(), **(labels or {})}
    if run_user is None and prepared is not None:
        prepared.discard()  # prepared for a user this call has not resolved yet
        prepared = None
    user, user_note = run_user if run_user is not None else _resolve_user(client, image_id, profile, labels)
    prepared = _take_prepared(prepared, image_id=image_id, input_file=input_file, out_dir=out_dir, profile=profile,
                              user=user, labels=labels)
    if prepared is not None:
        work, params = prepared.work, prepared.params
    else:
        work, inputs = _prepare_dirs(input_file, out_dir, scratch_dir)
        params = container_params(image_id=image_id, inputs_dir=inputs, outputs_dir=out_dir, profile=profile,
                                  user=user, labels=labels)
    result = CaseRun(status="crash", container_params=params, user=user_note, precreated=prepared is not None)
    api = client.api
    container_id: str | None = None
    attach: Any = None
    if prepared is not None:
        container_id, attach = prepared.container_id, prepared.attach
        pump, out_log, err_log = prepared.pump, prepared.out_log, prepared.err_log
    else:
        out_log, err_log = BoundedLog(profile.log_keep_bytes), BoundedLog(profile.log_keep_bytes)
    meter = CgroupMeter(profile.cgroup_parent)
    try:
        with ExitStack() as stack:
            if attach is not None:
                stack.callback(close_attach, attach)
            else:
                try:
                    # created before the core locks are taken: creation overlaps another run's wait for the cores
                    container_id, attach, pump, out_log, err_log = _create_attached(client, params,
                                                                                    profile.log_keep_bytes)
                except docker.errors.APIError as exc:
                    if _is_engine_error(exc):
                        raise SandboxInfraError(f"Docker engine error creating the container: {exc}") from exc
                    result.reason = f"the container could not be created: {exc.explanation or exc}"
                    return result
                stack.callback(close_attach, attach)
            assert container_id is not None
            t_lock = time.monotonic()
            stack.enter_context(CoreLocks(profile.pinned_cores()))
            result.lock_wait_s = time.monotonic() - t_lock
            meter.before_start()
            # the timed span: from just before the engine's start call to the return of the blocking wait
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
            _remove(api, container_id, remove)
        shutil.rmtree(work, ignore_errors=True)


def _remove(api: Any, container_id: str, how: str) -> None:
    if how == "async":
        remove_later(api, container_id)
        return
    try:
        api.remove_container(container_id, force=True)
    except Exception:
        pass
