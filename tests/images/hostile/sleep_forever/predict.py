"""Sleeps past the case timeout (expected: timeout)."""
import time

import hostile

hostile.probe("sleep_forever", "start")
time.sleep(10**7)
