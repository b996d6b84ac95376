"""The one way tests wait: on a condition, never a fixed sleep.

``wait_until(predicate, timeout, what)`` polls until ``predicate()`` is truthy and returns its value; on timeout it
raises :class:`WaitTimeout` (both a ``TimeoutError`` and an ``AssertionError``, so it reads as a failed test).
``wait_http(url)`` waits until a URL answers 200, failing early if the process meant to serve it died.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["WaitTimeout", "wait_until", "wait_http"]

T = TypeVar("T")


class WaitTimeout(TimeoutError, AssertionError):
    """A condition a test waited for did not come true in time."""


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, what: str = "the condition",
               interval: float = 0.05, proc: subprocess.Popen | None = None,
               detail: Callable[[], str] | None = None) -> T:
    """Poll ``predicate`` every ``interval`` s until it returns something truthy (returned); ``proc``: fail at once
    if that process exits meanwhile; ``detail``: what to add to the failure (a log tail, the state seen last)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise WaitTimeout(_with(f"process exited with {proc.returncode} while waiting for {what}", detail))
        if time.monotonic() >= deadline:
            raise WaitTimeout(_with(f"timed out after {timeout:g} s waiting for {what}", detail))
        time.sleep(interval)


def _with(message: str, detail: Callable[[], str] | None) -> str:
    return message if detail is None else f"{message}\n{detail()}"


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers 200 (failing early when ``proc`` died)."""
    import httpx

    last: list[Any] = [None]
    # one client for every poll: a new one per poll costs ~18 ms of CPU (it loads the CA bundle), the poll ~1 ms
    http = httpx.Client(timeout=2)

    def answers() -> bool:
        try:
            return http.get(url).status_code == 200
        except httpx.HTTPError as exc:
            last[0] = exc
            return False

    try:
        wait_until(answers, timeout, f"{url} to answer 200", interval=0.1, proc=proc)
    except WaitTimeout as exc:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered") from None
        raise WaitTimeout(f"{url} did not answer within {timeout}s ({last[0]})") from exc
    finally:
        http.close()
