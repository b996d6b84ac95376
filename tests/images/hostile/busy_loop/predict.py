"""Spins on the CPU past the case timeout (expected: timeout)."""
import hostile

hostile.probe("busy_loop", "start")
while True:
    pass
