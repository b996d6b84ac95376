"""A correct prediction that takes ~2 s per case (used by the fault tests to be killed mid-case)."""
import time

import hostile

hostile.probe("slow_ok", "start")
time.sleep(2.0)
hostile.write_correct_outputs()
