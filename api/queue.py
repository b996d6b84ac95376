"""Enqueueing runs: the API splits a run into shards and sends one task per shard, by name, on the track's queue
(api/execution/shards.py); it never imports worker/ or Docker code."""

from __future__ import annotations

__all__ = ["enqueue_run", "enqueue_run_sharded", "EnqueueError", "check_track_queue"]


class EnqueueError(RuntimeError):
    """The broker could not take the message (the run stays queued; the reaper requeues it)."""


def enqueue_run(settings, run_id: int, queue: str) -> str:
    """Split the run into shards and send them on ``queue`` (:func:`enqueue_run_sharded`); returns the first
    message id. Raises ``EnqueueError``."""
    return enqueue_run_sharded(settings, run_id, queue)


def enqueue_run_sharded(settings, run_id: int, queue: str | None = None) -> str:
    """Split the run into shards and send one ``segarena.run_shard(shard_id)`` per shard on the track's queue
    (docs/worker-protocol.md); returns the first message id. Raises ``EnqueueError``."""
    from api.execution.shards import enqueue_run_sharded as _sharded

    try:
        return _sharded(settings, run_id, queue)
    except EnqueueError:
        raise
    except Exception as exc:
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
