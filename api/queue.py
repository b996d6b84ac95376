"""Enqueueing runs: the API sends a task by name on the track's queue; it never imports Docker code."""

from __future__ import annotations

import threading

__all__ = ["enqueue_run", "enqueue_run_sharded", "EnqueueError", "check_track_queue"]

_apps: dict[str, object] = {}
_lock = threading.Lock()


class EnqueueError(RuntimeError):
    """The broker could not take the message (the run stays queued; the reaper requeues it)."""


def _celery(settings):
    with _lock:
        app = _apps.get(settings.broker_url)
        if app is None:
            from worker.celery_app import make_celery

            app = make_celery(settings)
            _apps[settings.broker_url] = app
        return app


def enqueue_run(settings, run_id: int, queue: str) -> str:
    """Send ``RUN_TASK(run_id)`` to ``queue``; returns the Celery task id. Raises ``EnqueueError``.

    With ``SEGARENA_EXECUTION=sharded`` the run is split into shards instead (:func:`enqueue_run_sharded`)."""
    if getattr(settings, "execution", "local") == "sharded":
        return enqueue_run_sharded(settings, run_id, queue)
    from worker.celery_app import RUN_TASK

    app = _celery(settings)
    try:
        result = app.send_task(
            RUN_TASK, args=[run_id], queue=queue, retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0},
        )
    except Exception as exc:  # kombu raises many kinds (OperationalError, socket errors)
        raise EnqueueError(f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from exc
    return str(result.id)


def enqueue_run_sharded(settings, run_id: int, queue: str | None = None) -> str:
    """Split the run into shards and send one ``segarena.run_shard(shard_id)`` per shard on the track's queue
    (docs/worker-protocol.md); returns the first message id. Raises ``EnqueueError``."""
    from api.execution.shards import enqueue_run_sharded as _sharded

    try:
        return _sharded(settings, run_id, queue)
    except EnqueueError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. the storage could not serve the test set: the run stays queued,
        # and the trusted reaper splits and sends it later (api.execution.reaper.resend_unsplit_runs)
        raise EnqueueError(f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from exc


def check_track_queue(settings, queue: str | None, gpus: int | None = None) -> None:
    """Refuse (422) a track on a queue that is not declared in SEGARENA_QUEUES (no worker would ever serve
    it), and a track with GPUs on a cpu-kind queue."""
    if queue is None:
        return
    from api.errors import ApiError

    declared = settings.declared_queues
    listing = ", ".join(f"{name} ({kind})" for name, kind in declared.items())
    if queue not in declared:
        raise ApiError(422, "invalid_request",
                       f"queue: {queue!r} is not a declared queue; declared: {listing}. Use one of them, or declare "
                       f"it in the server's SEGARENA_QUEUES setting (name:kind, e.g. "
                       f"SEGARENA_QUEUES={','.join(f'{n}:{k}' for n, k in declared.items())},{queue}:cpu) and start "
                       f"a worker for it")
    if (gpus or 0) > 0 and declared[queue] != "gpu":
        gpu_queues = [n for n, k in declared.items() if k == "gpu"]
        raise ApiError(422, "invalid_request",
                       f"queue: a track with gpus > 0 must use a gpu-kind queue, and {queue!r} is cpu-kind; "
                       f"gpu-kind queues: {', '.join(gpu_queues) or 'none (declare one in SEGARENA_QUEUES)'}")
