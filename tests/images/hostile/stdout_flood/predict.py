"""Floods stdout with 1 GiB, then writes a correct output (expected: ok or timeout; the kept log
tail must stay small and nothing of it may remain on the host)."""
import sys

import hostile

line = b"x" * 1023 + b"\n"
chunk = line * 1024  # 1 MiB
hostile.probe("stdout_flood", "start")
for _ in range(1024):
    sys.stdout.buffer.write(chunk)
sys.stdout.flush()
hostile.write_correct_outputs()
hostile.probe("stdout_flood", "done")
