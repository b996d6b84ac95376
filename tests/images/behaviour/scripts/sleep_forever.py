"""Sleeps past the case timeout (expected: timeout)."""
import time

import common

print("sleeping", flush=True)
common.probe("sleep_forever", "start")
time.sleep(10**7)
