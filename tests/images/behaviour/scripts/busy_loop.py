"""Spins on the CPU past the case timeout (expected: timeout)."""
import common

common.probe("busy_loop", "start")
while True:
    pass
