"""Looks for the Docker engine's socket (expected: ok, absent)."""
import os
import socket

import hostile

for path in ("/var/run/docker.sock", "/run/docker.sock"):
    hostile.probe("exists" + path.replace("/", "_"), os.path.exists(path))

    def connect(path=path):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)

    hostile.probe("connect" + path.replace("/", "_"), hostile.errno_of(connect))
hostile.write_correct_outputs()
