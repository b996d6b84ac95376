"""Writes segs one voxel too large on every axis (expected: invalid_output)."""
import numpy as np

import hostile

for path in hostile.cases():
    hostile.write_seg(path, np.pad(hostile.box_fill(path), 1))
