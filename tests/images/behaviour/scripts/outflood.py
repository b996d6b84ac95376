"""Fills outputs/, the one writable host directory, with 2 GiB unless stopped (expected: invalid_output, stopped by
the output watch long before the worker's disk fills)."""
import os

import common

block = b"z" * (1024 * 1024)
with open(os.path.join(common.OUTPUTS, "flood.bin"), "wb") as fh:
    for _ in range(2048):
        fh.write(block)
        fh.flush()
common.write_correct_outputs()
