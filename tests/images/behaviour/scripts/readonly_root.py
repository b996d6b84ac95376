"""Tries to write to the image's root file system, including a directory it owns (expected: ok,
with EROFS (30) on every write)."""
import common


def write(path):
    def _write():
        with open(path, "w") as fh:
            fh.write("pwned")
    return _write


for where in ("/owned/probe", "/etc/probe", "/workspace/probe", "/usr/bin/probe"):
    common.probe("write_errno" + where.replace("/", "_"), common.errno_of(write(where)))
common.write_correct_outputs()
