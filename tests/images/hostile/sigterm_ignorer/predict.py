"""Ignores SIGTERM/SIGINT/SIGHUP and sleeps (expected: timeout; it must still be stopped)."""
import signal
import time

import hostile

for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
hostile.probe("sigterm_ignorer", "start")
while True:
    time.sleep(1)
