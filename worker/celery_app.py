"""The Celery application shared by the worker and (for sending only) the API.

Broker from settings: Redis in production, kombu's SQLAlchemy transport on SQLite in embedded mode
(no server). ``task_acks_late`` and prefetch 1, so a worker that dies mid-run leaves its message to
be redelivered; tasks are idempotent (case results are unique per attempt and case).
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

__all__ = ["make_celery", "get_celery", "RUN_TASK", "REAP_TASK"]

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
    if settings.embedded_broker:
        app.conf.broker_transport_options = {"polling_interval": 0.5}
    return app


@lru_cache(maxsize=1)
def get_celery() -> Celery:
    return make_celery()
