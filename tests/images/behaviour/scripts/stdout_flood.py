"""Floods stdout with 256 MiB between a first and a last line, then writes a correct output (expected: ok, or timeout
on a short case limit; the kept log is head + tail and nothing of it may remain on the host)."""
import sys

import common

out = sys.stdout.buffer
out.write(b"FIRST LINE\n")
out.flush()
common.probe("stdout_flood", "start")
line = b"x" * 1023 + b"\n"
chunk = line * 1024  # 1 MiB
for _ in range(256):  # 256 MiB: 4,000 times the 64 KiB of head and tail the platform keeps
    out.write(chunk)
out.flush()
common.write_correct_outputs()
common.probe("stdout_flood", "done")
out.write(b"LAST LINE\n")
out.flush()
