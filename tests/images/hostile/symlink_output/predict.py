"""Writes the output as a symlink to a host-looking path (expected: invalid_output; the worker
must not follow it)."""
import os

import hostile

for path in hostile.cases():
    os.symlink("/etc/shadow", hostile.out_path(path))
hostile.probe("symlinks", len(hostile.cases()))
