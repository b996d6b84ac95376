"""A correct prediction that takes ~2 s per case (the fault tests kill it mid-case; the worker tests
revoke it while it runs) (expected: ok)."""
import time

import common

print("thinking for 2 s", flush=True)
common.probe("slow", "start")
time.sleep(2.0)
common.write_correct_outputs()
