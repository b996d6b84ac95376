"""The Celery application shared by the worker and (for sending only) the API.

Broker from settings: Redis in production, kombu's SQLAlchemy transport on SQLite in embedded mode
(no server). ``task_acks_late`` and prefetch 1, so a worker that dies mid-run leaves its message to
be redelivered; tasks are idempotent (case results are unique per attempt and case).

Queues: declared once in ``SEGARENA_QUEUES`` (name:kind, kind cpu or gpu; default ``cpu:cpu,gpu:gpu``),
the same setting the API checks tracks against. A worker executes one container at a time
(``--pool=solo --concurrency=1``, see ``segarena worker``). A GPU worker (``SEGARENA_WORKER_GPUS``
set) serves gpu-kind queues only, a CPU worker cpu-kind queues only, and a worker asked to consume an
undeclared queue refuses to start. At start-up a worker removes SegArena containers left behind by
dead workers of its host and announces itself in the worker registry (:mod:`worker.registry`).
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery, signals
from kombu import Queue

__all__ = ["make_celery", "get_celery", "RUN_TASK", "REAP_TASK", "QUEUES", "check_worker_queues"]

QUEUES = ("cpu", "gpu")  # the default declaration (SEGARENA_QUEUES=cpu:cpu,gpu:gpu)

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
        task_default_queue=next(iter(settings.declared_queues)),
        task_queues=[Queue(q, routing_key=q) for q in settings.declared_queues],
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
    """Refuse an undeclared queue, a GPU worker on a cpu-kind queue and a CPU-only worker on a gpu-kind one."""
    declared = settings.declared_queues
    kind = settings.worker_kind
    listing = ", ".join(f"{n}:{k}" for n, k in declared.items())
    mine = [n for n, k in declared.items() if k == kind]
    if not consumed:
        raise RuntimeError(f"this {kind} worker has no queue to consume: SEGARENA_QUEUES ({listing}) declares no "
                           f"{kind}-kind queue; declare one (name:{kind})")
    unknown = [q for q in consumed if q not in declared]
    if unknown:
        raise RuntimeError(f"queue(s) {', '.join(unknown)} not declared in SEGARENA_QUEUES ({listing}): declare them "
                           f"there (name:kind, the same value on the API and every worker), or consume declared "
                           f"queues (SEGARENA_WORKER_QUEUES)")
    wrong = [q for q in consumed if declared[q] != kind]
    if wrong and kind == "gpu":
        raise RuntimeError(f"a GPU worker (SEGARENA_WORKER_GPUS set) serves gpu-kind queues only, and "
                           f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} cpu-kind: start it with "
                           f"SEGARENA_WORKER_QUEUES={','.join(mine) or 'gpu'}")
    if wrong:
        raise RuntimeError(f"gpu-kind queue {', '.join(wrong)}: a gpu-kind queue needs a worker that owns GPUs: set "
                           f"SEGARENA_WORKER_GPUS, e.g. 0 (a CPU worker serves cpu-kind queues: {', '.join(mine)})")


@signals.celeryd_after_setup.connect(weak=False, dispatch_uid="segarena-check-queues")
def _check_queues(sender=None, instance=None, **_kw) -> None:
    from api.settings import get_settings

    consumed = list(instance.app.amqp.queues.consume_from or {}) if instance is not None else []
    try:
        check_worker_queues(get_settings(), consumed)
    except RuntimeError as exc:
        # Celery logs and swallows an exception from a signal handler (and a SystemExit from worker_main
        # ends with status 0): exit now, with a status a supervisor sees as a failure
        import logging
        import os
        import sys

        logging.getLogger("segarena.worker").critical("refusing to start: %s", exc)
        print(f"segarena worker: refusing to start: {exc}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(2)


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


@signals.worker_ready.connect(weak=False, dispatch_uid="segarena-announce")
def _announce(sender=None, **_kw) -> None:
    """Upsert this worker's row in the registry and keep it fresh (GET /api/status counts it online)."""
    from api.settings import get_settings
    from worker.registry import start_announcing

    consumed = list(sender.app.amqp.queues.consume_from or {}) if sender is not None else []
    start_announcing(get_settings(), name=getattr(sender, "hostname", "") or "", queues=consumed)


@signals.worker_shutdown.connect(weak=False, dispatch_uid="segarena-retire")
def _retire(sender=None, **_kw) -> None:
    from worker.registry import stop_announcing

    stop_announcing()
