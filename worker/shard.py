"""Execute one shard on this execution host (docs/worker-protocol.md).

``claim`` the fairest shard of a queue, make sure its image is loaded (:mod:`worker.cache`), then for
each case of the spec: download the input (sha256 checked) into a fresh per-case directory, run it in
the sandbox (:func:`worker.sandbox.run_case`, caps from the spec), upload the output and measurements,
delete the case's files. A heartbeat thread beats every ``heartbeat_s`` (also while a container runs);
on ``{cancel: true}`` or a 409 (the lease was lost) it kills this shard's container at once and the
shard stops. At the end ``finish(done)``; on an infrastructure error (engine down, download failure,
full disk, API unreachable) ``finish(infra, reason)``, which requeues the shard.

The worker does not judge outputs: it only classifies what the sandbox sees (exit, timeout, oom, no
output, output limits); ``status: ok`` means "exited 0 and wrote the file". The trusted side validates
and scores.

``wall_s`` of a case runs from the start of its input download to the moment its upload starts
(download + directory set-up + container, start-up included); the upload itself cannot be measured
in its own request body.
"""

from __future__ import annotations

import errno
import logging
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import interactive as prompted
from . import sandbox as sb
from .cache import ImageCache
from .client import APIError, InfraError, LeaseLost, WorkerClient
from .housekeeping import LABEL_SHARD, sweep_orphans

__all__ = ["ShardExecutor", "ShardReport", "LABEL_SHARD", "sweep_orphans", "make_meta"]

log = logging.getLogger(__name__)

_CASE_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
KILL_POLL_S = 0.25


@dataclass
class ShardReport:
    """What happened to one claimed shard (or to a claim that found nothing)."""

    outcome: str  # none (204), done, infra, cancelled, lost
    shard_id: int | None = None
    run_id: int | None = None
    cases: list[str] = field(default_factory=list)  # cases uploaded
    statuses: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    wall_s: float = 0.0
    stop_latency_s: float | None = None  # cancel/lease loss seen -> container gone


def make_meta(case_run: sb.CaseRun, *, lease: str, wall_s: float, log_chars: int,
              max_bytes: int = 240 * 1024) -> dict[str, Any]:
    """The ``meta`` of a case upload (docs/worker-protocol.md); the log excerpts (head and tail of each
    stream) are shortened until the JSON fits ``max_bytes`` (the API's SEGARENA_WORKER_META_MAX_BYTES)."""
    import json

    def bounded(text: str, limit: int) -> str:
        if len(text) <= limit:
            return text
        half = max(0, limit // 2 - 4)
        return text[:half] + "\n[...]\n" + (text[-half:] if half else "")

    def excerpt(stream: str, limit: int) -> str:
        """Head and tail of the stream within ``limit`` characters, with the note of how many bytes were cut
        (the sandbox's note, recomputed when the excerpt must be shorter than what the sandbox kept)."""
        text = case_run.log_text(stream)
        if len(text) <= limit:
            return text
        head, tail = getattr(case_run, f"{stream}_head") or "", getattr(case_run, f"{stream}_tail") or ""
        total = max(int(getattr(case_run, f"{stream}_bytes") or 0), len(head.encode()) + len(tail.encode()))
        half = max(0, (limit - 64) // 2)  # the note is shorter than 64 characters
        h, t = head[:half], (tail or head)[-half:] if half else ""
        if not tail and len(head) <= 2 * half:
            h, t = head, ""
        cut = max(0, total - len(h.encode()) - len(t.encode()))
        return f"{h}\n[... {cut} bytes of {stream} cut ...]\n{t}"

    reason = case_run.reason if len(case_run.reason) <= 2000 else bounded(case_run.reason, 2000)
    limit = max(0, int(log_chars))
    while True:
        meta = {
            "lease": lease,
            "status": case_run.status,
            "reason": reason,
            "runtime_s": round(float(case_run.runtime_s), 6),
            "cpu_s": case_run.cpu_s,
            "peak_memory_bytes": case_run.peak_memory_bytes,
            "exit_code": case_run.exit_code,
            "wall_s": round(float(wall_s), 6),
            "stdout_tail": excerpt("stdout", limit),
            "stderr_tail": excerpt("stderr", limit),
            "container_params": case_run.container_params,
        }
        if limit == 0 or len(json.dumps(meta, ensure_ascii=False, default=str).encode()) <= max_bytes:
            return meta
        limit //= 2


class _Stop(Exception):
    """The shard must stop (cancelled, or the lease was lost)."""


class _Heartbeat:
    """Beats every ``interval`` seconds while the shard runs; on cancel or a lost lease it sets ``stop``
    and keeps killing this shard's containers (until the shard loop has seen it)."""

    def __init__(self, executor: ShardExecutor, shard_id: int, lease: str, interval: float) -> None:
        self.ex, self.shard_id, self.lease = executor, shard_id, lease
        self.interval = max(0.2, float(interval))
        self.stop = threading.Event()
        self.why = ""
        self.stopped_at: float | None = None
        self.killed_at: float | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"shard-{shard_id}-heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._done.set()
        self._thread.join(timeout=10)

    def signal(self, why: str) -> None:
        if not self.stop.is_set():
            self.why = why
            self.stopped_at = time.monotonic()
            self.stop.set()
            log.warning("shard %s: %s: stopping", self.shard_id, why)

    def _loop(self) -> None:
        while not self._done.is_set():
            if self.stop.is_set():
                if self.ex.kill_shard_containers(self.shard_id) and self.killed_at is None:
                    self.killed_at = time.monotonic()
                self._done.wait(KILL_POLL_S)
                continue
            if self._done.wait(self.interval):
                return
            try:
                answer = self.ex.client.heartbeat(self.shard_id, self.lease)
            except LeaseLost:
                self.signal("the lease was lost (409): the shard was requeued")
                continue
            except (InfraError, APIError) as exc:
                log.warning("shard %s: heartbeat failed: %s", self.shard_id, exc)
                continue
            except Exception:
                log.exception("shard %s: heartbeat error", self.shard_id)
                continue
            if answer.get("cancel"):
                self.signal("cancelled by the API")


class ShardExecutor:
    """Runs shards for one worker process (one container at a time)."""

    def __init__(self, config: Any, client: WorkerClient | None = None, *, docker: Any = None,
                 cache: ImageCache | None = None) -> None:
        self.config = config
        self.client = client or WorkerClient(config)
        self._docker = docker
        self.cache = cache or ImageCache(config, self.client, docker=docker)
        self.identity = sb.worker_identity()
        self.deployment = sb.deployment_id(config)
        self.cgroup_parent = sb.CgroupMeter.process_parent()
        self._current: int | None = None  # the shard being executed (worker.housekeeping spares its containers)
        config.ensure_dirs()

    def current_shard(self) -> int | None:
        """The id of the shard this executor is running now, or None."""
        return self._current

    def docker(self) -> Any:
        if self._docker is None:
            self._docker = sb.get_docker_client(self.config)
            self.cache._docker = self._docker
        return self._docker

    # -- entry points -----------------------------------------------------------------------------
    def run_next(self, queue: str) -> ShardReport:
        """Claim the fairest queued shard of ``queue`` and execute it; ``outcome='none'`` on 204."""
        spec = self.client.claim(self.config.worker_name, queue)
        if not spec:
            return ShardReport(outcome="none")
        return self.execute(spec)

    def execute(self, spec: dict[str, Any]) -> ShardReport:
        """Execute a claimed shard (its spec); always ends the shard on the API (finish or stop)."""
        shard_id, lease = int(spec["shard_id"]), str(spec["lease"])
        report = ShardReport(outcome="done", shard_id=shard_id, run_id=spec.get("run_id"))
        t0 = time.monotonic()
        hb = _Heartbeat(self, shard_id, lease, float(spec.get("heartbeat_s") or 2.0))
        self._current = shard_id
        try:
            with hb:
                self._cases(spec, hb, report)
        except _Stop:
            pass
        except (InfraError, sb.SandboxInfraError, OSError) as exc:
            if isinstance(exc, sb.SandboxInfraError):
                sb.forget_docker_client(self.config)
                self._docker = None
            if isinstance(exc, OSError) and not isinstance(exc, InfraError):
                what = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "local file error"
                reason = f"{what} on worker {self.config.worker_name}: {exc}"
            else:
                reason = f"worker {self.config.worker_name}: {exc}"
            report.outcome, report.reason = "infra", reason[:2000]
        except Exception as exc:
            log.exception("shard %s: unexpected error", shard_id)
            report.outcome = "infra"
            report.reason = f"worker {self.config.worker_name}: unexpected {exc.__class__.__name__}: {exc}"[:2000]
        finally:
            # the cases' containers went to the background remover: gone before the shard is reported
            if not sb.flush_removals(timeout=10):
                log.warning("shard %s: containers still being removed after 10 s (the housekeeping sweep "
                            "removes what is left)", shard_id)
            report.wall_s = time.monotonic() - t0
            self._current = None
        if hb.stop.is_set():
            report.outcome = "lost" if "lease" in hb.why else "cancelled"
            report.reason = hb.why
            if hb.stopped_at is not None and hb.killed_at is not None:
                report.stop_latency_s = hb.killed_at - hb.stopped_at
            self.kill_shard_containers(shard_id)
            log.info("shard %s: %s after %d case(s)", shard_id, report.reason, len(report.cases))
            return report  # the API already moved the shard on (cancelled, or requeued with a new lease)
        try:
            self.client.finish(shard_id, lease, report.outcome, report.reason)
        except LeaseLost:
            report.outcome, report.reason = "lost", "the lease was lost (409) at finish"
        except (InfraError, APIError) as exc:
            # the reaper requeues the shard when its heartbeat goes stale
            log.error("shard %s: finish(%s) failed: %s", shard_id, report.outcome, exc)
        log.info("shard %s: %s, %d case(s) in %.1f s%s", shard_id, report.outcome, len(report.cases), report.wall_s,
                 f" ({report.reason})" if report.reason else "")
        return report

    # -- the cases --------------------------------------------------------------------------------
    def _labels(self, spec: dict[str, Any]) -> dict[str, str]:
        return {sb.LABEL_WORKER: self.identity, sb.LABEL_RUN: str(spec.get("run_id", "")),
                sb.LABEL_DEPLOYMENT: self.deployment, LABEL_SHARD: str(spec["shard_id"])}

    def _cases(self, spec: dict[str, Any], hb: _Heartbeat, report: ShardReport) -> None:
        """Run the spec's cases one by one, the image held in the engine meanwhile (worker/cache.py)."""
        cases = list(spec.get("cases") or [])
        if not cases:
            return
        profile = sb.SandboxProfile.from_caps(spec.get("caps") or {}, self.config, cgroup_parent=self.cgroup_parent)
        labels = self._labels(spec)
        with self.cache.hold(str(spec["image"]["image_id"])):
            run_user, image_error = self._prepare_image(spec, profile, labels)
            for case in cases:
                if hb.stop.is_set():
                    raise _Stop()
                self._case(spec, case, hb, report, profile=profile, labels=labels, run_user=run_user,
                           image_error=image_error)

    def _prepare_image(self, spec: dict[str, Any], profile: sb.SandboxProfile,
                       labels: dict[str, str]) -> tuple[tuple[str | None, str] | None, str]:
        """(the user containers run as, '') once the image is loaded, or (None, why) when the verified archive
        does not load (the participant's image: every case crashes with that reason)."""
        docker = self.docker()
        try:
            image, _ = self.cache.ensure(spec["image"])
            return sb.resolve_user(docker, image.id, image.attrs, allow_root=profile.allow_root, labels=labels), ""
        except sb.ImageLoadError as exc:
            return None, f"the image does not load: {exc}"
        except (InfraError, sb.SandboxInfraError):
            raise
        except Exception as exc:
            if sb._is_engine_error(exc):
                raise sb.SandboxInfraError(f"Docker engine error while preparing the image: {exc}") from exc
            raise

    def _case(self, spec: dict[str, Any], case: dict[str, Any], hb: _Heartbeat, report: ShardReport, *,
              profile: sb.SandboxProfile, labels: dict[str, str], run_user: tuple[str | None, str] | None,
              image_error: str) -> None:
        """One case: input download, container(s), upload of the output and measurements; its files deleted."""
        shard_id, lease, case_id = int(spec["shard_id"]), str(spec["lease"]), str(case["id"])
        t0 = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f"shard{shard_id}-", dir=self.config.work_dir))
        try:
            if image_error:
                case_run, outcome = sb.CaseRun(status="crash", reason=image_error), None
            else:
                case_run, outcome = self._execute(spec, case, hb, work, profile=profile, labels=labels,
                                                  run_user=run_user)
            meta = make_meta(case_run, lease=lease, wall_s=time.monotonic() - t0,
                             log_chars=int(getattr(self.config, "log_max_chars", 64 * 1024)),
                             max_bytes=int(getattr(self.config, "meta_max_bytes", 240 * 1024)))
            output = case_run.output_path if case_run.status == "ok" else None
            if outcome is not None:  # interactive: every iteration was uploaded; the trusted side folds them
                meta["interactive"], output = outcome.to_meta(), None
            try:
                answer = self.client.upload_case(shard_id, case_id, meta, output)
            except LeaseLost:
                hb.signal("the lease was lost (409) at upload: the shard was requeued")
                raise _Stop() from None
            report.cases.append(case_id)
            report.statuses[case_id] = case_run.status
            if answer.get("cancel"):
                hb.signal("cancelled by the API (upload answer)")
                raise _Stop()
        finally:
            if not getattr(self.config, "keep_case_files", False):
                shutil.rmtree(work, ignore_errors=True)

    def _execute(self, spec: dict[str, Any], case: dict[str, Any], hb: _Heartbeat, work: Path, *,
                 profile: sb.SandboxProfile, labels: dict[str, str],
                 run_user: tuple[str | None, str] | None) -> tuple[sb.CaseRun, Any]:
        """Download the case's input (sha256 checked) and run it (worker/interactive.py: prompt mode, timing,
        interactive iterations); (the case run, the interactive outcome or None). Raises _Stop when told to."""
        shard_id, case_id = int(spec["shard_id"]), str(case["id"])
        name = str(case.get("file") or f"{case_id}.npz")
        if not _CASE_FILE_RE.match(name) or name in (".", ".."):
            raise InfraError(f"the shard spec names an unsafe case file {name[:80]!r}")
        input_file = work / "in" / name
        image_id = str(spec["image"]["image_id"])
        # the case's container is created while its input downloads (same parameters; removed if unused)
        ahead = prompted.create_ahead(self.docker(), spec=spec, case=case, work=work, profile=profile, labels=labels,
                                      run_user=run_user, image_id=image_id)
        try:
            self.client.download(case.get("url") or f"/api/worker/shards/{shard_id}/inputs/{case_id}",
                                 input_file, sha256=str(case["sha256"]),
                                 size=int(case["bytes"]) if case.get("bytes") is not None else None,
                                 params={"lease": str(spec["lease"])})
            if hb.stop.is_set():
                raise _Stop()
            try:
                case_run, outcome = prompted.run_case(self, spec=spec, case=case, input_file=input_file, work=work,
                                                      profile=profile, labels=labels, run_user=run_user,
                                                      image_id=image_id, stopped=hb.stop.is_set, ahead=ahead)
            except Exception:
                if hb.stop.is_set():
                    raise _Stop() from None  # the kill raced the engine calls
                raise
        finally:
            ahead.discard()
        if hb.stop.is_set():
            raise _Stop()  # killed for cancel / lease loss: nothing to report
        return case_run, outcome

    # -- containers -------------------------------------------------------------------------------
    def kill_shard_containers(self, shard_id: int) -> int:
        """Kill and remove this worker's containers of ``shard_id``; returns how many were found."""
        try:
            api = self.docker().api
            found = api.containers(all=True, filters={"label": [f"{LABEL_SHARD}={shard_id}",
                                                                f"{sb.LABEL_WORKER}={self.identity}"]})
        except Exception as exc:
            log.warning("shard %s: cannot list containers to stop: %s", shard_id, exc)
            return 0
        killed = 0
        for c in found:
            if c.get("State") != "running":
                continue  # created, not started (or exited): the poll kills it once it runs
            try:
                api.kill(c["Id"])  # SIGKILL: run_case's wait returns at once and run_case removes it
                killed += 1
            except Exception:
                pass
        return killed

