"""Allocates memory until the container's cap stops it (expected: oom)."""
import common

print("allocating until stopped", flush=True)
common.probe("memory_bomb", "start")
blocks = []
while True:
    blocks.append(b"\x01" * (16 * 1024 * 1024))  # filled, so every page is resident
