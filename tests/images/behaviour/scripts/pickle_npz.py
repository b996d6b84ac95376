"""Writes segs as a pickled object array whose unpickling would run a shell command on the
*host* (touch /tmp/segarena-pwned-pickle) (expected: invalid_output, and no marker file)."""
import os

import numpy as np

import common


class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/segarena-pwned-pickle",))


for path in common.cases():
    np.savez(common.out_path(path), segs=np.array([Payload(), Payload()], dtype=object))
