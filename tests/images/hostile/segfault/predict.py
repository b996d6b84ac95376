"""Dereferences NULL: killed by SIGSEGV (expected: crash)."""
import ctypes

import hostile

hostile.probe("segfault", "start")
ctypes.string_at(0)
