"""Looks for network interfaces and tries to reach a listener the test opened on the host's
127.0.0.1 (port baked in at build time) (expected: ok, only "lo", connection refused)."""
import os
import socket

import hostile

hostile.probe("ifaces", ",".join(sorted(os.listdir("/sys/class/net"))))
port = int(open("/workspace/port.txt").read().strip() or 0)


def connect():
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


hostile.probe("connect_host_listener", hostile.errno_of(connect))
hostile.write_correct_outputs()
