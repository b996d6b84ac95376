"""Writes a correct output, then 20,004 small files into outputs/ (inodes on the worker's disk): the
output watch must stop it at the file-count limit."""
import os

import common

common.write_correct_outputs()
os.makedirs(os.path.join(common.OUTPUTS, "junk"), exist_ok=True)
for i in range(20_004):
    with open(os.path.join(common.OUTPUTS, "junk", f"f{i:05d}"), "wb") as fh:
        fh.write(b"x")
common.probe("written", 20_004)
