"""Allocates memory until the container's cap stops it (expected: oom)."""
import hostile

hostile.probe("memory_bomb", "start")
blocks = []
while True:
    blocks.append(b"\x01" * (16 * 1024 * 1024))  # filled, so every page is resident
