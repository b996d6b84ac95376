"""Celery tasks: thin bodies over plain-Python functions (tests call those directly).

``segarena.run_submission(run_id)`` claims the fairest queued run of its queue and executes it
(:func:`worker.runner.execute_run`); ``segarena.reap()`` is the periodic reaper
(:func:`worker.reaper.reap`). Both open their own DB sessions from the settings.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from .celery_app import REAP_TASK, RUN_TASK
from .reaper import ReapReport, reap
from .runner import execute_run

__all__ = ["run_submission", "reap_task", "execute_run", "reap", "ReapReport"]

log = logging.getLogger("segarena.worker")


@shared_task(name=RUN_TASK, bind=True, acks_late=True, ignore_result=True)
def run_submission(self, run_id: int) -> int | None:
    """Execute a queued run (the fairest of this queue; usually ``run_id``)."""
    from api.settings import get_settings

    delivery = getattr(self.request, "delivery_info", None) or {}
    queue = delivery.get("routing_key") or None
    try:
        return execute_run(int(run_id), get_settings(), queue=queue, task_id=self.request.id or "")
    except SoftTimeLimitExceeded:
        # the run keeps its heartbeat-less state: the reaper requeues it as a new attempt
        log.error("run %s: soft time limit exceeded", run_id)
        return None


@shared_task(name=REAP_TASK, ignore_result=True)
def reap_task() -> dict:
    """One reaper pass."""
    from dataclasses import asdict

    from api.settings import get_settings

    return asdict(reap(get_settings()))
