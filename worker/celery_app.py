"""The Celery application shared by the worker and (for sending only) the API.

Broker from settings: Redis in production, kombu's SQLAlchemy transport on SQLite in embedded mode
(no server). ``task_acks_late`` and prefetch 1, so a worker that dies mid-run leaves its message to
be redelivered; tasks are idempotent (case results are unique per attempt and case).

Queues: ``cpu`` and ``gpu``. A worker executes one container at a time (``--pool=solo
--concurrency=1``, see ``segarena worker``). A GPU worker (``SEGARENA_WORKER_GPUS`` set) serves the
``gpu`` queue only, and only a GPU worker may serve it: the worker refuses to start otherwise. At
start-up a worker removes SegArena containers left behind by dead workers of its host.
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery, signals
from kombu import Queue

__all__ = ["make_celery", "get_celery", "RUN_TASK", "REAP_TASK", "QUEUES", "check_worker_queues"]

QUEUES = ("cpu", "gpu")

RUN_TASK = "segarena.run_submission"
REAP_TASK = "segarena.reap"


def make_celery(settings=None) -> Celery:
    if settings is None:
        from api.settings import get_settings

        settings = get_settings()
    settings.ensure_dirs()
    app = Celery("segarena", broker=settings.broker_url, include=["worker.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="cpu",
        task_queues=[Queue(q, routing_key=q) for q in QUEUES],
        worker_concurrency=1,
        task_ignore_result=True,
        result_backend=None,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_serializer="json",
        accept_content=["json"],
        beat_schedule={"reap": {"task": REAP_TASK, "schedule": float(settings.reaper_interval_s),
                                "options": {"queue": settings.queues[0] if settings.queues else "cpu"}}},
    )
    if settings.broker_url.startswith("redis"):
        # a message unacked for longer than the longest run is redelivered; runs are idempotent
        app.conf.broker_transport_options = {"visibility_timeout": 6 * 3600}
    # Embedded broker: kombu's SQLAlchemy transport hands every transport option to create_engine(),
    # so none is set; it polls once a second (about 1 s pick-up latency).
    return app


@lru_cache(maxsize=1)
def get_celery() -> Celery:
    return make_celery()


def check_worker_queues(settings, consumed: list[str]) -> None:
    """Refuse a GPU worker on the cpu queue, and a CPU-only worker on the gpu queue."""
    owns_gpus = bool((settings.worker_gpus or "").strip())
    unknown = sorted(set(consumed) - set(QUEUES))
    if unknown:
        raise RuntimeError(f"unknown queue(s) {', '.join(unknown)}: SegArena workers consume cpu or gpu")
    if owns_gpus and set(consumed) != {"gpu"}:
        raise RuntimeError("a GPU worker (SEGARENA_WORKER_GPUS set) serves the gpu queue only: "
                           "start it with SEGARENA_WORKER_QUEUES=gpu")
    if "gpu" in consumed and not owns_gpus:
        raise RuntimeError("the gpu queue needs a worker that owns GPUs: set SEGARENA_WORKER_GPUS, e.g. 0")


@signals.celeryd_after_setup.connect(weak=False, dispatch_uid="segarena-check-queues")
def _check_queues(sender=None, instance=None, **_kw) -> None:
    from api.settings import get_settings

    consumed = list(instance.app.amqp.queues.consume_from or {}) if instance is not None else []
    check_worker_queues(get_settings(), consumed)


@signals.worker_ready.connect(weak=False, dispatch_uid="segarena-startup-sweep")
def _startup_sweep(sender=None, **_kw) -> None:
    """Remove containers of dead workers of this host before taking work (they hold pinned cores)."""
    import logging

    try:
        from api.settings import get_settings
        from worker import sandbox
        from worker.reaper import remove_orphan_containers

        settings = get_settings()
        remove_orphan_containers(sandbox.get_docker_client(settings), settings)
        sandbox.cleanup_cgroup_parents()
    except Exception as exc:  # noqa: BLE001 - the reaper retries later
        logging.getLogger("segarena.worker").warning("start-up container sweep failed: %s", exc)
