"""Raises (exit status 1, traceback on stderr) (expected: crash)."""
print("loading model", flush=True)
raise RuntimeError("model weights not found: /workspace/weights.pt")
