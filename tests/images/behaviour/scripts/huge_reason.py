"""Writes an output .npz without 'segs' but with 40,000 members of 250-character names: a loader that
lists the arrays present in its error message makes a 10 MB failure reason (served publicly). The
stored reason must stay bounded."""
import zipfile

import common

for path in common.cases():
    with zipfile.ZipFile(common.out_path(path), "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(40_000):
            zf.writestr(f"{i:06d}" + "k" * 244 + ".npy", b"")
common.probe("members", 40_000)
