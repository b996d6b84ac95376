"""Looks for other cases and for ground truth (expected: ok, one input, no gts anywhere in it)."""
import os

import numpy as np

import hostile

hostile.probe("inputs", len(os.listdir(hostile.INPUTS)))
keys = set()
for path in hostile.cases():
    with np.load(path, allow_pickle=False) as data:
        keys.update(data.files)
hostile.probe("input_keys", ",".join(sorted(keys)))
hostile.probe("gts_dirs", sum(1 for root, dirs, _ in os.walk("/workspace") for d in dirs if "gt" in d.lower()))
hostile.write_correct_outputs()
