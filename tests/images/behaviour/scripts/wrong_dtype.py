"""Writes segs as float64 with fractional values (expected: invalid_output)."""
import common

for path in common.cases():
    common.write_seg(path, common.box_fill(path).astype("float64") + 0.5)
