"""Writes the mask under the key "seg" instead of "segs" (expected: invalid_output)."""
import numpy as np

import hostile

for path in hostile.cases():
    np.savez_compressed(hostile.out_path(path), seg=hostile.box_fill(path))
