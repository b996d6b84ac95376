"""The trusted Celery app: consumes only the ``score`` queue (scoring next to the database and the ground
truth) and runs the trusted reaper from its beat (:mod:`api.execution.reaper`: the shard reaper, queued runs
re-sent, stale uploads expired, expired archives deleted). Also the sender the API uses for ``segarena.run_shard`` and
``segarena.score_case`` messages (sent by name: the API never imports ``worker/``).

Start it (embedded mode starts one for you once sharded execution is the default)::

    celery -A api.execution.celery:app worker -Q score --pool=solo --concurrency=1 -B

Tasks are plain functions underneath (:func:`api.execution.scoring.score_case`,
:func:`api.execution.reaper.reap`), so tests call them directly.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery
from kombu import Queue

from .contract import REAP_SHARDS_TASK, SCORE_QUEUE, SCORE_TASK

__all__ = ["make_trusted_celery", "scorer_worker_options", "sender_app"]

_lock = threading.Lock()
_senders: dict[str, Celery] = {}


def _conf(app: Celery, settings: Any) -> None:
    queues = [Queue(SCORE_QUEUE, routing_key=SCORE_QUEUE)] + [
        Queue(q, routing_key=q) for q in settings.declared_queues if q != SCORE_QUEUE]
    app.conf.update(
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        task_default_queue=SCORE_QUEUE, task_queues=queues, task_ignore_result=True, result_backend=None,
        broker_connection_retry_on_startup=True, broker_connection_max_retries=None,
        worker_hijack_root_logger=False, worker_send_task_events=False,
        task_serializer="json", accept_content=["json"],
        beat_schedule={"reap-shards": {"task": REAP_SHARDS_TASK, "schedule": float(settings.reaper_interval_s),
                                       "options": {"queue": SCORE_QUEUE}},
                       # notifications (api/notifications): fan-out and delivery start, returns at once; a message
                       # older than one interval is dropped (the next one does the same work)
                       "notify": {"task": "segarena.notify", "schedule": float(settings.notify_interval_s),
                                  "options": {"queue": SCORE_QUEUE, "expires": float(settings.notify_interval_s)}}},
    )
    if settings.broker_url.startswith("redis"):
        app.conf.broker_transport_options = {"visibility_timeout": 6 * 3600}


def sender_app(settings: Any) -> Celery:
    """A Celery app that only sends (one per broker URL, reused)."""
    with _lock:
        app = _senders.get(settings.broker_url)
        if app is None:
            settings.ensure_dirs()
            app = Celery("segarena-sender", broker=settings.broker_url)
            _conf(app, settings)
            _senders[settings.broker_url] = app
        return app


def scorer_worker_options(settings: Any, *, beat: bool) -> dict[str, Any]:
    """The options of the scorer's Celery worker (``segarena scorer``): what ``celery worker --loglevel=INFO
    --concurrency=1 --pool=solo -Q score -n scorer@%h [-B -s DATA_DIR/scorer-beat-schedule]`` gives ``app.Worker``,
    started without Celery's command line (its click-repl/prompt_toolkit imports: ~0.08 s of CPU per start)."""
    from celery.utils.nodenames import default_nodename, host_format

    options: dict[str, Any] = {"hostname": host_format(default_nodename("scorer@%h")), "loglevel": "INFO",
                               "concurrency": 1, "pool": "solo", "queues": [SCORE_QUEUE]}
    if beat:
        options.update(beat=True, schedule_filename=str(settings.data_dir / "scorer-beat-schedule"))
    return options


def make_trusted_celery(settings: Any = None) -> Celery:
    """The trusted worker app: ``segarena.score_case`` and ``segarena.reap_shards`` on ``score``."""
    if settings is None:
        from api.settings import get_settings

        settings = get_settings()
    settings.ensure_dirs()
    app = Celery("segarena-trusted", broker=settings.broker_url)
    _conf(app, settings)

    @app.task(name=SCORE_TASK, acks_late=True)
    def score_case_task(case_result_id: int) -> None:
        from api.settings import get_settings

        from .scoring import score_case

        score_case(get_settings(), int(case_result_id))

    @app.task(name=REAP_SHARDS_TASK)
    def reap_shards_task() -> None:
        from api.settings import get_settings

        from .reaper import reap

        reap(get_settings())

    @app.task(name="segarena.notify")
    def notify_task() -> None:
        from api.notifications.dispatcher import dispatch
        from api.settings import get_settings

        dispatch(get_settings(), background=True)  # attempts run on a thread pool: scoring never waits on them

    return app


def __getattr__(name: str) -> Any:  # module attribute ``app`` built lazily (reads settings only when used)
    if name == "app":
        app = globals().get("_trusted")
        if app is None:
            app = globals()["_trusted"] = make_trusted_celery()
        return app
    raise AttributeError(name)
