"""Behaves, but its image declares USER toor, a passwd alias of uid 0, on a track that forbids root:
it must run as a non-zero uid (the fixed 1000:1000)."""
import os

import common

common.probe("uid", os.getuid())
common.probe("gid", os.getgid())
common.write_correct_outputs()
