"""The stack a benchmark ran on: every ``bench/*.py`` prints :func:`stack_line` first, so that a figure cannot come
from a machine that differs from a fresh install (``pip install 'segarena[server]'``: uvicorn on uvloop + httptools)
without saying so.

Only the standard library: importable from any bench script (``from _stack import print_stack``; ``bench/`` is the
script's directory on ``sys.path``).
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import platform
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["version", "server_stack", "stack_line", "print_stack"]


def version(dist: str) -> str:
    """The installed version of distribution ``dist``, or ``-`` when it is not installed."""
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "-"


def server_stack() -> str:
    """uvicorn with the event loop and HTTP parser its ``auto`` settings pick (uvloop and httptools when importable,
    else asyncio and h11), with their versions."""
    loop = f"loop uvloop {version('uvloop')}" if importlib.util.find_spec("uvloop") else "loop asyncio (no uvloop)"
    http = (f"http httptools {version('httptools')}" if importlib.util.find_spec("httptools")
            else f"http h11 {version('h11')} (no httptools)")
    return f"uvicorn {version('uvicorn')}, {loop}, {http}"


def _cpu() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.processor() or platform.machine())


def stack_line(extra: Iterable[str] = ()) -> str:
    """``stack: Python …, uvicorn …, loop …, http …[, <dist> <version>…]; N cores (CPU), load average …``."""
    parts = [f"Python {platform.python_version()} ({platform.python_implementation()})", server_stack()]
    parts += [f"{dist} {version(dist)}" for dist in extra]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"stack: {', '.join(parts)}; {os.cpu_count()} cores ({_cpu()}), load average {load}"


def print_stack(*extra: str) -> None:
    """Print :func:`stack_line` (with the versions of the distributions ``extra``) to stdout, flushed."""
    print(stack_line(extra), file=sys.stdout, flush=True)


if __name__ == "__main__":
    print_stack()
