"""Dereferences NULL: killed by SIGSEGV (expected: crash)."""
import ctypes

import common

common.probe("segfault", "start")
ctypes.string_at(0)
