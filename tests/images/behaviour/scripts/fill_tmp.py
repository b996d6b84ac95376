"""Fills /tmp until refused (self-capped at 2 GiB), then writes a correct output (expected: ok,
with ENOSPC (28) or EROFS (30) well before the cap)."""
import os

import common

written, errno = 0, "none"
chunk = b"\x00" * (1024 * 1024)
try:
    with open("/tmp/fill", "wb") as fh:
        while written < 2 * 1024**3:
            fh.write(chunk)
            fh.flush()
            written += len(chunk)
except OSError as exc:
    errno = exc.errno
common.probe("tmp_errno", errno)
common.probe("tmp_bytes", written)
try:
    os.unlink("/tmp/fill")
except OSError:
    pass
common.write_correct_outputs()
