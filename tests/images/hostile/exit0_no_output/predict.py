"""Exits 0 without writing anything (expected: no_output)."""
import hostile

hostile.probe("cases_seen", len(hostile.cases()))
print("all done!")
