"""Writes the output as a symlink to a host-looking path (expected: invalid_output; the worker
must not follow it)."""
import os

import common

for path in common.cases():
    os.symlink("/etc/shadow", common.out_path(path))
common.probe("symlinks", len(common.cases()))
