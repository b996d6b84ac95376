"""Forks until the pids limit refuses, then hangs (expected: timeout; the probe shows the refusal).

Self-capped at 4000 children so that a sandbox *without* a pids limit still cannot take the host down.
"""
import os
import time

import hostile

forked = 0
while forked < 4000:
    try:
        pid = os.fork()
    except OSError as exc:
        hostile.probe("fork_refused_errno", exc.errno)
        break
    if pid == 0:
        time.sleep(3600)
        os._exit(0)
    forked += 1
hostile.probe("forked", forked)
time.sleep(3600)
