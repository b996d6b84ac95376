"""Deterministic, single-threaded CPU-bound work (a fixed integer loop), then a correct output (expected: ok;
bench/sandbox.py measures the CPU cap with it)."""
import common

acc = 0
for i in range(12_000_000):
    acc = (acc + i * i) % 1_000_003
print(acc)
common.write_correct_outputs()
