"""Behaves, but its image runs as root (expected: contained on a track that forbids root: it runs
as the fixed non-root 1000:1000, as worker/sandbox.py documents)."""
import os

import common

common.probe("uid", os.getuid())
common.write_correct_outputs()
