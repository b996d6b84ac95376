"""Raises (exit status 1, traceback on stderr) (expected: crash)."""
import hostile

hostile.stderr("loading weights from /workspace/model.pth")
raise RuntimeError("hostile crash: the model failed to load")
