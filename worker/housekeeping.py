"""Housekeeping of an execution host's own machine (the trusted reaper does everything else).

- :func:`sweep_orphans` — this deployment's containers of dead worker processes of this host (they hold pinned
  cores and memory); at worker start and periodically.
- :func:`sweep_leaked` — this worker's own containers of a shard it no longer executes (a ``run_case`` whose
  removal failed, an engine hiccup during a kill, a heartbeat thread that gave up): periodically.
- :class:`Sweeper` — a daemon thread running both every ``sweep_interval_s`` (``SEGARENA_SWEEP_INTERVAL_S``).

A container is this worker's when its ``segarena.worker`` label is this process's identity (``host:pid``); the
shard it belongs to is its ``segarena.shard`` label. The shard the executor is running is read *after* listing,
so a container created for it between the listing and the check is never touched.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from . import sandbox as sb

__all__ = ["LABEL_SHARD", "sweep_orphans", "sweep_leaked", "Sweeper"]

log = logging.getLogger(__name__)

LABEL_SHARD = "segarena.shard"


def sweep_orphans(docker: Any, config: Any, *, skip_own: bool = False) -> list[str]:
    """Remove this deployment's containers left by dead worker processes of this host (they hold pinned
    cores). A worker's identity is ``host:pid``; a pid that no longer exists (or is this process's own, from
    before a restart in a fresh PID namespace) marks an orphan. ``skip_own``: leave this process's containers
    (the periodic sweep: :func:`sweep_leaked` decides those). Returns the removed container ids."""
    host = socket.gethostname()
    removed: list[str] = []
    try:
        found = docker.api.containers(all=True, filters={"label": [f"{sb.LABEL_DEPLOYMENT}={sb.deployment_id(config)}",
                                                                   LABEL_SHARD]})
    except Exception as exc:
        log.warning("orphan sweep: cannot list containers: %s", exc)
        return removed
    me = sb.worker_identity()
    for c in found:
        owner = (c.get("Labels") or {}).get(sb.LABEL_WORKER, "")
        if skip_own and owner == me:
            continue  # this process's own containers: sweep_leaked decides
        owner_host, _, pid_text = owner.rpartition(":")
        if owner_host != host or not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid != os.getpid() and sb.pid_alive(pid):
            continue
        try:
            docker.api.remove_container(c["Id"], force=True)
            removed.append(c["Id"])
        except Exception:
            pass
    return removed


def sweep_leaked(docker: Any, identity: str, current_shard: Callable[[], int | None]) -> list[str]:
    """Remove this worker's (``identity``) containers of any shard other than ``current_shard()`` (read after
    listing); returns their ids."""
    try:
        found = docker.api.containers(all=True, filters={"label": [f"{sb.LABEL_WORKER}={identity}", LABEL_SHARD]})
    except Exception as exc:
        log.warning("leak sweep: cannot list containers: %s", exc)
        return []
    current = current_shard()
    removed: list[str] = []
    for c in found:
        shard = (c.get("Labels") or {}).get(LABEL_SHARD, "")
        if current is not None and shard == str(current):
            continue
        try:
            docker.api.remove_container(c["Id"], force=True)
            removed.append(c["Id"])
            log.warning("removed leaked container %s of shard %s (not running it any more)", c["Id"][:12], shard)
        except Exception:
            pass
    return removed


class Sweeper:
    """Runs :func:`sweep_leaked` and :func:`sweep_orphans` every ``interval_s`` on a daemon thread (start/stop,
    or use as a context manager). ``executor`` is a :class:`worker.shard.ShardExecutor`."""

    def __init__(self, executor: Any, interval_s: float) -> None:
        self.executor = executor
        self.interval_s = max(0.05, float(interval_s))
        self.removed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="segarena-sweeper", daemon=True)

    def sweep(self) -> list[str]:
        """One pass; returns the container ids removed."""
        ex = self.executor
        try:
            docker = ex.docker()
        except Exception as exc:
            log.warning("sweep: the Docker engine is unreachable: %s", exc)
            return []
        removed = sweep_leaked(docker, ex.identity, ex.current_shard) + sweep_orphans(docker, ex.config, skip_own=True)
        self.removed.extend(removed)
        return removed

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sweep()
            except Exception:
                log.exception("sweep failed")

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def __enter__(self) -> Sweeper:
        return self.start()

    def __exit__(self, *_exc: Any) -> None:
        self.stop()
