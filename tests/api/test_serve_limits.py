"""``segarena serve`` under a slowloris: request heads that never finish are closed after
SEGARENA_HEADER_TIMEOUT_S, the process accepts at most SEGARENA_MAX_CONNECTIONS at once, and normal
requests keep working during the attack. A real ``segarena serve`` subprocess, raw sockets on 127.0.0.1, on both
HTTP parsers (httptools, the installed default, and h11)."""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.cli_helpers import ROOT, free_port, segarena_cmd, wait_http
from tests.processes import spawn, stop


PARSERS = ["httptools", "h11"]  # the head timeout is implemented per parser: both are served for real


@contextlib.contextmanager
def served(tmp_path: Path, parser: str = "auto", **env: str):
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("SEGARENA_") or k == "SEGARENA_BASE_IMAGE"}
    full.update({"SEGARENA_DATA_DIR": str(tmp_path / "data"), **env})
    proc = spawn(segarena_cmd("serve", "--port", str(port), "--no-access-log", "--http", parser), env=full,
                 log=tmp_path / "serve.log", cwd=ROOT)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 90, proc=proc)
        if parser != "auto":  # the server says which stack it runs on; it must be the one asked for
            stack = (tmp_path / "serve.log").read_text(errors="replace")
            assert f", http {parser} " in stack, stack
        yield port
    finally:
        stop(proc, timeout=20)


def _half_sent(port: int, n: int) -> list[socket.socket]:
    """``n`` connections that each sent a request line and one header, never the blank line ending the head."""
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-{i}: 1\r\n".encode())
        s.setblocking(False)
        socks.append(s)
    return socks


def _wait_closed(socks: list[socket.socket], deadline_s: float, trickle: list[socket.socket] = (),
                 start: float | None = None) -> dict:
    """Seconds from ``start`` (default: now) until the server closed each socket (None: still open at the
    deadline); ``trickle`` sockets send one more header byte every 0.5 s meanwhile (a slowloris that keeps
    the connection busy)."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    start = time.monotonic() if start is None else start
    closed: dict[socket.socket, float | None] = {s: None for s in socks}
    last_trickle = start
    while time.monotonic() - start < deadline_s and any(v is None for v in closed.values()):
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            except BlockingIOError:
                continue
            if not data:
                closed[s] = time.monotonic() - start
                sel.unregister(s)
        if time.monotonic() - last_trickle > 0.5:
            last_trickle = time.monotonic()
            for s in trickle:
                if closed.get(s) is None:
                    with contextlib.suppress(OSError):
                        s.send(b"a")
    sel.close()
    return closed


@pytest.mark.slow
@pytest.mark.parametrize("parser", PARSERS)
def test_half_sent_requests_are_closed_after_the_header_timeout_and_normal_requests_still_work(tmp_path, parser):
    timeout_s, n = 2.0, 200
    with served(tmp_path, parser, SEGARENA_HEADER_TIMEOUT_S=str(timeout_s), SEGARENA_MAX_CONNECTIONS="1000") as port:
        started = time.monotonic()
        socks = _half_sent(port, n)
        trickle = socks[:20]
        # during the attack a normal request is answered at once
        with httpx.Client(timeout=5) as c:
            t0 = time.monotonic()
            r = c.get(f"http://127.0.0.1:{port}/health")
            normal_s = time.monotonic() - t0
        assert r.status_code == 200 and normal_s < 2, (r.status_code, normal_s)
        closed = _wait_closed(socks, timeout_s + 8, trickle=trickle, start=started)
        still_open = [s for s, t in closed.items() if t is None]
        for s in socks:
            s.close()
        assert not still_open, f"{len(still_open)} of {n} half-sent connections still open after {timeout_s + 8}s"
        times = sorted(closed.values())
        print(f"\n{n} half-sent connections (20 trickling a byte every 0.5 s), header timeout {timeout_s}s: all "
              f"closed between {times[0]:.2f}s and {times[-1]:.2f}s after the first opened; a normal request "
              f"during the attack took {normal_s * 1000:.0f} ms")
        assert times[0] >= timeout_s - 0.5 and times[-1] <= timeout_s + 3, (times[0], times[-1])
        # kept-alive connections are not cut in the middle of normal use
        with httpx.Client(timeout=5) as c:
            for _ in range(3):
                assert c.get(f"http://127.0.0.1:{port}/health").status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("parser", PARSERS)
def test_the_connection_limit_answers_503_beyond_it_and_recovers_when_the_heads_time_out(tmp_path, parser):
    with served(tmp_path, parser, SEGARENA_HEADER_TIMEOUT_S="2", SEGARENA_MAX_CONNECTIONS="20") as port:
        socks = _half_sent(port, 25)
        try:
            time.sleep(0.3)
            r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
            assert r.status_code == 503, r.status_code  # beyond SEGARENA_MAX_CONNECTIONS: refused at once
            closed = _wait_closed(socks, 8)
            assert all(t is not None for t in closed.values())
            assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        finally:
            for s in socks:
                s.close()
