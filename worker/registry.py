"""The worker registry: each worker process upserts its row in ``worker_nodes`` when it is ready and
refreshes ``last_seen_at`` every ``settings.worker_heartbeat_s`` seconds from a daemon thread.

``GET /api/status`` counts a worker online when it was seen within ``settings.worker_online_s``. A DB
error never stops the worker: it is logged and the next beat tries again (the row is re-created if an
organizer deleted it). A worker that stops cleanly marks itself offline (``last_seen_at`` moved back
by the online window) so the status page does not count it for a minute more.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta

from api.db import session_scope
from api.models import WorkerNode, utcnow

__all__ = ["announce", "beat", "start_announcing", "stop_announcing", "cpu_model"]

log = logging.getLogger("segarena.worker")

_state: dict = {}
_lock = threading.Lock()


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo ('' where unknown)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()[:200]
    except OSError:
        pass
    return ""


def _cores(settings) -> int | None:
    spec = (getattr(settings, "worker_cpus", "") or "").strip()
    if spec:
        n = 0
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            try:
                n += (int(hi) - int(lo) + 1) if hi else 1
            except ValueError:
                return os.cpu_count()
        return n
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def announce(settings, *, name: str, queues: list[str]) -> None:
    """Insert or update this worker's row (name is Celery's node name, unique per worker process)."""
    now = utcnow()
    values = dict(queues=",".join(queues)[:200], kind=settings.worker_kind, host=socket.gethostname()[:200],
                  pid=os.getpid(), cpu_model=cpu_model(), cores=_cores(settings), started_at=now, last_seen_at=now)
    with session_scope(settings.database_url) as s:
        row = s.query(WorkerNode).filter(WorkerNode.name == name).one_or_none()
        if row is None:
            s.add(WorkerNode(name=name, **values))
        else:
            for key, value in values.items():
                setattr(row, key, value)


def beat(settings, *, name: str, queues: list[str], offline: bool = False) -> None:
    """Refresh ``last_seen_at`` (re-creating the row if it is gone); ``offline`` marks a clean stop."""
    with session_scope(settings.database_url) as s:
        row = s.query(WorkerNode).filter(WorkerNode.name == name).one_or_none()
        if row is not None:
            row.last_seen_at = utcnow() - (timedelta(seconds=settings.worker_online_s + 1) if offline else timedelta(0))
            return
    if not offline:
        announce(settings, name=name, queues=queues)


def _loop(settings, name: str, queues: list[str], stop: threading.Event) -> None:
    while not stop.wait(float(settings.worker_heartbeat_s)):
        try:
            beat(settings, name=name, queues=queues)
        except Exception as exc:  # noqa: BLE001 - the registry is informative; the worker keeps working
            log.warning("worker registry heartbeat failed: %s", str(exc).splitlines()[0][:200] if str(exc) else exc)


def start_announcing(settings, *, name: str, queues: list[str]) -> None:
    """Announce now and keep announcing from a daemon thread; never raises."""
    name = (name or f"segarena-{os.getpid()}@{socket.gethostname()}")[:200]
    try:
        announce(settings, name=name, queues=queues)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not announce this worker in the registry: %s", str(exc).splitlines()[0][:200] if str(exc) else exc)
    with _lock:
        old = _state.get("stop")
        if old is not None:
            old.set()
        stop = threading.Event()
        thread = threading.Thread(target=_loop, args=(settings, name, queues, stop), name="segarena-registry", daemon=True)
        _state.update(stop=stop, thread=thread, name=name, queues=queues, settings=settings)
        thread.start()


def stop_announcing() -> None:
    """Stop the heartbeat thread and mark this worker offline (clean shutdown); never raises."""
    with _lock:
        stop, name, queues, settings = (_state.pop(k, None) for k in ("stop", "name", "queues", "settings"))
        _state.pop("thread", None)
    if stop is None:
        return
    stop.set()
    try:
        beat(settings, name=name, queues=queues or [], offline=True)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not mark this worker offline: %s", exc)
