"""Daemonizes a child (double fork, setsid) that outlives predict.py (expected: ok; the child
must die with the container: no host process named segarena-hostile-orphan afterwards)."""
import os

import common

pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        devnull = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.execv("/usr/bin/python3", ["python3", "-c", "import time; time.sleep(3600)",
                                      "segarena-hostile-orphan"])
    os._exit(0)
os.waitpid(pid, 0)
common.probe("orphan", "spawned")
common.write_correct_outputs()
