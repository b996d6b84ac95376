"""The execution host's Celery consumer: ``segarena.run_shard(shard_id)`` (docs/worker-protocol.md).

Its own Celery app (:func:`make_exec_celery`), built from :class:`worker.config.WorkerConfig` alone
(broker URL and the declared queues from the environment; nothing from ``api/``). A message is a unit
of work, not an assignment: the task claims the fairest queued shard of the queue the message came
from (``POST /api/worker/claim``), which is usually but not always ``shard_id``; a 204 makes it a
no-op. ``acks_late`` with prefetch 1: a worker that dies mid-shard leaves its message to be
redelivered (and the API's reaper requeues the shard when its heartbeat goes stale); results are
idempotent per case on the API.

:func:`run_execution_worker` is what a CLI entry point calls: it checks the queues, sweeps containers
of dead workers of this host, calibrates, says hello (the API answers the queues this token may
serve and refuses others with 403), starts the periodic sweeper (:mod:`worker.housekeeping`), then runs
``celery worker -Q <queues> --pool=solo --concurrency=1``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict
from typing import Any

from celery import Celery
from celery.exceptions import Reject
from kombu import Queue

from . import sandbox as sb
from .calibrate import hello_payload
from .client import Forbidden, LeaseLost, WorkerClient
from .config import ConfigError, WorkerConfig, load_config
from .housekeeping import Sweeper, sweep_orphans
from .shard import ShardExecutor

__all__ = ["SHARD_TASK", "make_exec_celery", "run_execution_worker", "check_queues", "worker_options", "handle_shard",
           "start_pinging"]

log = logging.getLogger(__name__)

SHARD_TASK = "segarena.run_shard"
ENGINE_DOWN_BACKOFF_S = 5.0


def check_queues(config: WorkerConfig, consumed: list[str]) -> None:
    """Refuse no queue, an undeclared queue, or a queue of the other kind (ConfigError naming the fix)."""
    declared = config.declared_queues
    kind = config.worker_kind
    listing = ", ".join(f"{n}:{k}" for n, k in declared.items())
    if not consumed:
        raise ConfigError(f"this {kind} worker has no queue to consume: SEGARENA_QUEUES ({listing}) declares no "
                          f"{kind}-kind queue; declare one (name:{kind}) or set SEGARENA_WORKER_QUEUES")
    unknown = [q for q in consumed if q not in declared]
    if unknown:
        raise ConfigError(f"queue(s) {', '.join(unknown)} not declared in SEGARENA_QUEUES ({listing}): declare them "
                          "there (the same value as on the API) or consume declared queues (SEGARENA_WORKER_QUEUES)")
    wrong = [q for q in consumed if declared[q] != kind]
    if wrong:
        fix = ("serves gpu-kind queues only" if kind == "gpu"
               else "serves cpu-kind queues only; a gpu-kind queue needs SEGARENA_WORKER_GPUS")
        raise ConfigError(f"queue(s) {', '.join(wrong)}: a {kind} worker {fix}")


def make_exec_celery(config: WorkerConfig, executor: ShardExecutor | None = None) -> Celery:
    """A Celery app consuming ``segarena.run_shard`` on the declared queues (no result backend)."""
    app = Celery("segarena-exec", broker=config.broker_url, set_as_current=False)
    declared = list(config.declared_queues)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=declared[0],
        task_queues=[Queue(q, routing_key=q) for q in declared],
        worker_concurrency=1,
        task_ignore_result=True,
        result_backend=None,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_serializer="json",
        accept_content=["json"],
    )
    if config.broker_url.startswith("redis"):
        # an unacked message is redelivered after this long; the API's reaper requeues lost shards sooner
        app.conf.broker_transport_options = {"visibility_timeout": 6 * 3600}
    app.segarena_config = config
    app.segarena_executor = executor

    @app.task(name=SHARD_TASK, bind=True, acks_late=True, ignore_result=True)
    def run_shard(self, shard_id: int) -> dict[str, Any] | None:
        delivery = getattr(self.request, "delivery_info", None) or {}
        queue = delivery.get("routing_key") or None
        return handle_shard(self.app, shard_id, queue)

    return app


def _executor(app: Celery) -> ShardExecutor:
    ex = getattr(app, "segarena_executor", None)
    if ex is None:
        ex = app.segarena_executor = ShardExecutor(app.segarena_config)
    return ex


def handle_shard(app: Celery, shard_id: int, queue: str | None) -> dict[str, Any] | None:
    """The body of ``segarena.run_shard``: claim the fairest shard of ``queue`` and execute it."""
    config: WorkerConfig = app.segarena_config
    executor = _executor(app)
    if not queue or queue not in config.declared_queues:
        queue = config.queues[0] if config.queues else next(iter(config.declared_queues))
    try:
        executor.docker().ping()
    except Exception as exc:
        sb.forget_docker_client(config)
        executor._docker = None
        log.error("run_shard %s: the Docker engine is unreachable (%s); message requeued in %.0f s", shard_id, exc,
                  ENGINE_DOWN_BACKOFF_S)
        time.sleep(ENGINE_DOWN_BACKOFF_S)
        raise Reject(f"Docker engine unreachable: {exc}", requeue=True) from None
    try:
        report = executor.run_next(queue)
    except Exception as exc:
        log.error("run_shard %s: %s", shard_id, exc)
        return {"outcome": "error", "reason": str(exc)[:500]}
    if report.outcome == "none":
        log.info("run_shard %s: nothing to claim on %s (no-op)", shard_id, queue)
    elif report.shard_id != int(shard_id):
        log.info("run_shard %s: ran shard %s (the fairest of %s)", shard_id, report.shard_id, queue)
    return asdict(report)


def worker_options(config: WorkerConfig, queues: list[str], *, loglevel: str = "INFO") -> dict[str, Any]:
    """The options of this host's Celery worker: what ``celery worker --pool=solo --concurrency=1 -Q QUEUES
    -n NAME@%h --without-gossip --without-mingle`` gives ``app.Worker`` (started without Celery's command line,
    whose click-repl, prompt_toolkit and subcommand imports cost ~0.08 s of CPU per start)."""
    from celery.utils.nodenames import default_nodename, host_format

    return {"hostname": host_format(default_nodename(f"{config.worker_name}@%h")), "pool": "solo",
            "concurrency": 1, "loglevel": loglevel, "queues": list(queues), "without_gossip": True,
            "without_mingle": True}


def run_execution_worker(config: WorkerConfig | None = None, *, loglevel: str = "INFO",
                         client: WorkerClient | None = None) -> None:
    """Start an execution worker in this process (blocks until it stops). Raises :class:`ConfigError`
    (the caller prints it and exits with status 2) when the configuration or the API refuses it."""
    config = config or load_config()
    config.ensure_dirs()
    queues = config.queues
    check_queues(config, queues)
    try:
        docker = sb.get_docker_client(config)
        docker.ping()
    except Exception as exc:
        raise ConfigError(f"the Docker engine is unreachable ({exc}); start it or set SEGARENA_DOCKER_HOST") from None
    removed = sweep_orphans(docker, config)
    if removed:
        log.warning("removed %d container(s) of dead workers of this host", len(removed))
    sb.cleanup_cgroup_parents()
    client = client or WorkerClient(config)
    payload = hello_payload(config, docker, queues=queues)
    try:
        answer = client.hello(payload)
    except Forbidden as exc:
        raise ConfigError(f"the API refused this worker ({exc.status} {exc.code}): {exc.message}") from None
    served = [q for q in (answer.get("queues") or queues) if q in queues] or queues
    log.info("execution worker %s: queues %s, calibration %.3f s, heartbeat %s s", config.worker_name,
             ",".join(served), payload["calibration_s"], answer.get("heartbeat_s"))
    executor = ShardExecutor(config, client, docker=docker)
    app = make_exec_celery(config, executor)
    stop = start_pinging(config, payload)
    sweeper = Sweeper(executor, float(config.sweep_interval_s)).start()
    try:
        app.Worker(**worker_options(config, served, loglevel=loglevel)).start()
    finally:
        sweeper.stop()
        stop.set()
        try:  # a clean stop: GET /api/status stops counting this worker at once
            WorkerClient(config, retries=0, timeout_s=5.0).ping(config.worker_name, offline=True)
        except Exception as exc:
            log.info("could not tell the API this worker stopped: %s", exc)


def start_pinging(config: WorkerConfig, hello: dict[str, Any] | None = None) -> threading.Event:
    """A daemon thread calling ``POST /api/worker/ping`` every ``worker_heartbeat_s`` (the API counts a worker
    online while it is seen; an idle Celery worker calls nothing else); when the API no longer knows this worker
    (409: e.g. an organizer deleted its row), it says ``hello`` again. Set the returned event to stop it."""
    stop = threading.Event()
    pinger = WorkerClient(config, retries=0, timeout_s=min(10.0, float(config.http_timeout_s)))

    def loop() -> None:
        while not stop.wait(float(config.worker_heartbeat_s)):
            try:
                try:
                    pinger.ping(config.worker_name)
                except LeaseLost:
                    if hello is not None:
                        pinger.hello(hello)
            except Exception as exc:
                log.warning("ping failed: %s", str(exc).splitlines()[0][:200] if str(exc) else exc)

    threading.Thread(target=loop, name="segarena-ping", daemon=True).start()
    return stop


def main() -> int:  # pragma: no cover - thin wrapper (python -m worker.exec_tasks)
    import sys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    try:
        run_execution_worker()
    except ConfigError as exc:
        print(f"segarena execution worker: refusing to start: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
