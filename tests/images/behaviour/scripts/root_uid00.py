"""Behaves, but its image declares USER 00 (uid 0 spelled differently) on a track that forbids root:
it must run as a non-zero uid (the fixed 1000:1000)."""
import os

import common

common.probe("uid", os.getuid())
common.probe("gid", os.getgid())
common.write_correct_outputs()
