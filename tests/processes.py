"""The one way tests run real processes: each in its own session (so its whole process group can be signalled),
its output in a log file, stopped with SIGTERM, then SIGKILL if it does not exit in time."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

__all__ = ["spawn", "stop", "kill", "log_tail", "child_env", "INHERITED"]

# What a process a test starts inherits of SegArena's settings from the test process (the rest of SEGARENA_* is the
# test's to set): the base image, the PostgreSQL port and the test process's own core-lock directory
# (tests/conftest.py: containers of different test processes do not wait for each other's cores).
INHERITED = frozenset({"SEGARENA_BASE_IMAGE", "SEGARENA_PG_PORT", "SEGARENA_CORE_LOCK_DIR"})


def child_env(*, drop: tuple[str, ...] = ("SEGARENA_",)) -> dict[str, str]:
    """This process's environment without the variables starting with ``drop``, except :data:`INHERITED`."""
    return {k: v for k, v in os.environ.items() if not k.startswith(drop) or k in INHERITED}


def spawn(argv: list[str], *, env: dict[str, str] | None = None, log: Path | None = None,
          cwd: Path | str | None = None) -> subprocess.Popen:
    """Start ``argv`` in a new session, stdout and stderr appended to ``log`` (or discarded)."""
    if log is None:
        return subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True)
    with open(log, "ab") as fh:
        return subprocess.Popen(argv, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL, timeout: float = 30) -> None:
    """Send ``sig`` to the process's group and wait for it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)


def stop(*procs: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM every running one (in the order given), wait up to ``timeout`` s each, then SIGKILL what is left."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill(proc, timeout=10)


def log_tail(log: Path, chars: int = 4000) -> str:
    """The last ``chars`` characters of a process's log (what a failed wait shows), or a note that there is none."""
    return log.read_text(errors="replace")[-chars:] if log.exists() else f"({log} was not written)"
