"""Tries to write to the image's root file system, including a directory it owns (expected: ok,
with EROFS (30) on every write)."""
import hostile


def write(path):
    def _write():
        with open(path, "w") as fh:
            fh.write("pwned")
    return _write


for where in ("/owned/probe", "/etc/probe", "/workspace/probe", "/usr/bin/probe"):
    hostile.probe("write_errno" + where.replace("/", "_"), hostile.errno_of(write(where)))
hostile.write_correct_outputs()
