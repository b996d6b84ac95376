"""Ignores SIGTERM/SIGINT/SIGHUP and sleeps (expected: timeout; it must still be stopped)."""
import signal
import time

import common

for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
common.probe("sigterm_ignorer", "start")
while True:
    time.sleep(1)
