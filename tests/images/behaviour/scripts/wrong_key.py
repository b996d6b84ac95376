"""Writes the mask under the key "seg" instead of "segs" (expected: invalid_output)."""
import numpy as np

import common

for path in common.cases():
    np.savez_compressed(common.out_path(path), seg=common.box_fill(path))
