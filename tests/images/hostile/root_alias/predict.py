"""Behaves, but its image declares USER toor, a passwd alias of uid 0, on a track that forbids root:
it must run as a non-zero uid (the fixed 1000:1000)."""
import os

import hostile

hostile.probe("uid", os.getuid())
hostile.probe("gid", os.getgid())
hostile.write_correct_outputs()
