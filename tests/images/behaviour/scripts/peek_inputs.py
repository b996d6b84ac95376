"""Looks for other cases and for ground truth (expected: ok, one input, no gts anywhere in it)."""
import os

import numpy as np

import common

common.probe("inputs", len(os.listdir(common.INPUTS)))
keys = set()
for path in common.cases():
    with np.load(path, allow_pickle=False) as data:
        keys.update(data.files)
common.probe("input_keys", ",".join(sorted(keys)))
common.probe("gts_dirs", sum(1 for root, dirs, _ in os.walk("/workspace") for d in dirs if "gt" in d.lower()))
common.write_correct_outputs()
