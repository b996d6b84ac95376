"""Exits 0 without writing anything (expected: no_output)."""
import common

common.probe("cases_seen", len(common.cases()))
print("done (wrote nothing)")
