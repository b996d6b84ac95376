"""Forks until the pids limit refuses, then hangs (expected: timeout, or crash when the poller names the process
limit; the probe and stderr show the refusal).

Self-capped at 4000 children so that a sandbox *without* a pids limit still cannot take the host down.
"""
import os
import time

import common

forked = 0
while forked < 4000:
    try:
        pid = os.fork()
    except OSError as exc:
        common.probe("fork_refused_errno", exc.errno)
        common.stderr(f"fork failed after {forked} children: {exc}")
        break
    if pid == 0:
        time.sleep(3600)
        os._exit(0)
    forked += 1
common.probe("forked", forked)
time.sleep(3600)
