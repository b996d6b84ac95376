"""Looks for network interfaces and tries to reach a listener the test opened on the host's 127.0.0.1 (port baked in
at build time: ``--build-arg LISTENER_PORT``), serves itself on its own localhost (what a model may do: the name
resolves and loopback works), then writes a correct output (expected: ok, only "lo", the host's listener not
reached, its own loopback working)."""
import os
import socket

import common

nics = sorted(os.listdir("/sys/class/net"))
print(f"interfaces: {' '.join(nics)}", flush=True)
common.probe("ifaces", ",".join(nics))
port = int(os.environ.get("LISTENER_PORT") or 0)


def connect():
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


common.probe("connect_host_listener", common.errno_of(connect))


def own_loopback():
    with socket.socket() as server:
        server.bind(("localhost", 0))
        server.listen(1)
        with socket.create_connection(("localhost", server.getsockname()[1]), timeout=2):
            pass


common.probe("own_loopback", common.errno_of(own_loopback))
common.write_correct_outputs()
