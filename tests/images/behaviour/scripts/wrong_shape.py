"""Writes segs one voxel too large on every axis (expected: invalid_output)."""
import numpy as np

import common

for path in common.cases():
    common.write_seg(path, np.pad(common.box_fill(path), 1))
