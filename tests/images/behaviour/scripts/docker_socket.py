"""Looks for the Docker engine's socket (expected: ok, absent)."""
import os
import socket

import common

for path in ("/var/run/docker.sock", "/run/docker.sock"):
    common.probe("exists" + path.replace("/", "_"), os.path.exists(path))

    def connect(path=path):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)

    common.probe("connect" + path.replace("/", "_"), common.errno_of(connect))
common.write_correct_outputs()
