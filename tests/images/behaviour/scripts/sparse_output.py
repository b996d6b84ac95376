"""Writes a correct output, then a sparse 101 GiB file next to it (no disk blocks, but an apparent
size that breaks whoever copies or reads it) and exits at once: the output watch must catch it,
even after the container exited."""
import os

import common

common.write_correct_outputs()
with open(os.path.join(common.OUTPUTS, "sparse.bin"), "wb") as fh:
    fh.truncate(101 * 1024**3)
common.probe("sparse", "written")
