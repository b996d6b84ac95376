"""Writes segs as float64 with fractional values (expected: invalid_output)."""
import hostile

for path in hostile.cases():
    hostile.write_seg(path, hostile.box_fill(path).astype("float64") + 0.5)
