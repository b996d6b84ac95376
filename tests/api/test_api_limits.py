"""Issue 13, limits that hold before work is done: request bodies are bounded while they are read,
before parsing and before authentication (api/limits.py), except the archive upload routes, which
stream to storage under their own limit.

At commit f13a824 a 100 MiB anonymous JSON body was read whole, parsed and only then refused as
unauthorized: 2.8 GiB of API memory. Here the body is cut off at ``max_body_bytes`` and the API is
measured from outside (a uvicorn subprocess, raw sockets, its /proc RSS).
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time
from pathlib import Path

import pytest
from tests.api_helpers import add_member, auth, make_image_tar, seed, submit
from tests.processes import log_tail, spawn, stop
from tests.servers import free_port
from tests.waiting import wait_until

from api.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20


# ---------------------------------------------------------------------------------------------
# in-process (TestClient): the rule, the exemption, the largest legitimate body
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def small_client(settings):
    """An app whose body limit is 64 KiB (so the tests send little)."""
    from fastapi.testclient import TestClient

    from tests.api_helpers import shared_app

    settings.max_body_bytes = 64 * 1024
    app = shared_app(settings, migrate=True)
    w = seed(settings.database_url)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, w


def _is_413(r) -> None:
    assert r.status_code == 413, (r.status_code, r.text[:300])
    body = r.json()
    assert body["code"] == "too_large", body
    assert "64 KiB" in body["message"] and "SEGARENA_MAX_BODY_BYTES" in body["message"], body


def test_declared_body_over_the_limit_is_refused_before_auth(small_client):
    c, w = small_client
    big = json.dumps({"slug": "x", "title": "x", "description": "a" * (100 * 1024)})
    # anonymous: 413, not 401 -- the size is judged before anybody is authenticated
    _is_413(c.post("/api/challenges", content=big, headers={"Content-Type": "application/json"}))
    # a form (the organizer login page) and a route with no body at all are bounded the same way
    _is_413(c.post("/login", content="token=" + "a" * (100 * 1024),
                   headers={"Content-Type": "application/x-www-form-urlencoded"}))
    _is_413(c.post("/api/submissions/1/cancel", content=b"x" * (65 * 1024), headers=auth(w.token_a)))
    # under the limit the same routes work as before
    r = c.post("/api/challenges", content=json.dumps({"slug": "x", "title": "x"}),
               headers={"Content-Type": "application/json"})
    assert r.status_code == 401, r.text


def test_chunked_body_over_the_limit_is_cut_off(small_client):
    """(The TestClient buffers the generator; that the server stops reading is shown out of process below.)"""
    c, w = small_client

    def chunks():
        yield b'{"slug": "chunked", "title": "x", "description": "'
        for _ in range(64):  # 64 x 16 KiB = 1 MiB offered, with no Content-Length
            yield b"ab" * (8 * 1024)
        yield b'"}'

    r = c.post("/api/challenges", content=chunks(), headers={**auth(w.token_org), "Content-Type": "application/json"})
    _is_413(r)
    assert c.get("/api/challenges/chunked").status_code == 404  # nothing was created


def test_archive_upload_routes_keep_their_own_limit(small_client):
    c, w = small_client
    archive = make_image_tar(salt="limits", layer_bytes=300 * 1024)  # well over the 64 KiB body limit
    assert len(archive) > 256 * 1024
    r = submit(c, w.token_a, data=archive)
    assert r.status_code == 201, r.text
    # the resumable route: open (small JSON), PUT one chunk over the body limit, complete
    other = make_image_tar(salt="limits-resumable", layer_bytes=300 * 1024)
    r = c.post("/api/challenges/cvpr24/tracks/booster/uploads", json={"total_bytes": len(other)}, headers=auth(w.token_a))
    assert r.status_code == 201, r.text
    uid = r.json()["upload_id"]
    r = c.put(f"/api/uploads/{uid}", content=other,
              headers={**auth(w.token_a), "Content-Range": f"bytes 0-{len(other) - 1}/{len(other)}",
                       "Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    r = c.post(f"/api/uploads/{uid}/complete", headers=auth(w.token_a))
    assert r.status_code == 201, r.text


def test_the_largest_legitimate_body_fits_the_default(settings):
    """A challenge spec at every field's limit (50,000-character description, 20 tracks of 20,000
    characters each), in 4-byte UTF-8 characters as the CLI sends it, is under the default limit."""
    from fastapi.testclient import TestClient

    from tests.api_helpers import shared_app
    from api.db import session_scope

    assert Settings.model_fields["max_body_bytes"].default == 2 * MiB
    assert settings.max_body_bytes == 2 * MiB
    app = shared_app(settings, migrate=True)
    with session_scope(settings.database_url) as s:
        _, token = add_member(s, name="olga", role="organizer")
    wide = "\U0001F600"  # 4 bytes in UTF-8
    spec = {"slug": "big", "title": "T" * 200, "demo": True, "description": wide * 50000,
            "tracks": [{"slug": f"t{i}", "title": "t" * 200, "description": wide * 20000, "testset": "tiny"}
                       for i in range(20)]}
    body = json.dumps(spec, ensure_ascii=False, separators=(",", ":")).encode()
    assert 1.5 * MiB < len(body) < 2 * MiB, len(body)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/api/challenges", content=body, headers={**auth(token), "Content-Type": "application/json"})
        assert r.status_code == 201, r.text[:500]
        assert len(r.json()["tracks"]) == 20


# ---------------------------------------------------------------------------------------------
# out of process: a uvicorn subprocess, raw sockets, its memory
# ---------------------------------------------------------------------------------------------
def _kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{key} not in /proc/{pid}/status")


@pytest.fixture
def served(settings, tmp_path):
    """The API in its own process (uvicorn --factory server.app:create_app), default settings."""
    port = free_port()
    env = {**os.environ, "SEGARENA_DATA_DIR": str(settings.data_dir), "PYTHONPATH": str(ROOT)}
    log = tmp_path / "uvicorn.log"
    proc = spawn([sys.executable, "-m", "uvicorn", "--factory", "server.app:create_app", "--host", "127.0.0.1",
                  "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=env, log=log)

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    try:
        wait_until(up, 60, f"the API process to accept connections on port {port}", interval=0.1, proc=proc,
                   detail=lambda: log_tail(log, 2000))
        yield proc, port
    finally:
        stop(proc, timeout=10)


def _read_response(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def _length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def _json_of(response: bytes) -> dict:
    return json.loads(response.split(b"\r\n\r\n", 1)[1])


def _get_ok(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /api/challenges HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert _read_response(s, 10).startswith(b"HTTP/1.1 200"), "the API stopped answering"


def test_declared_100_mib_anonymous_body_is_refused_at_once(served):
    proc, port = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        t0 = time.monotonic()
        s.sendall(b"POST /api/challenges HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {100 * MiB}\r\n\r\n".encode())
        response = _read_response(s, 5)  # not one byte of the body is sent: the answer must not wait for it
        took = time.monotonic() - t0
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert _json_of(response)["code"] == "too_large"
    assert took < 2, took
    _get_ok(port)


def test_chunked_100_mib_anonymous_body_costs_no_memory(served):
    """100 MiB of JSON, chunked (no Content-Length), anonymous: 413 after the limit, RSS stays flat."""
    proc, port = served
    _get_ok(port)  # warm: routes and database touched once
    Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    rss_before = _kib(proc.pid, "VmRSS")
    chunk = b"1," * (MiB // 2)  # the body is one valid JSON array of 50 million numbers: [1,1,...,1]
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    response = b""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /api/challenges HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            while sent < 100 * MiB:
                readable, _, _ = select.select([s], [], [], 0)
                if readable:
                    break
                s.sendall(b"1\r\n[\r\n" + frame if not sent else frame)
                sent += len(chunk)
            else:
                s.sendall(b"2\r\n1]\r\n0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = _read_response(s, 60)
    took = time.monotonic() - t0
    time.sleep(0.5)
    rss_after, peak = _kib(proc.pid, "VmRSS"), _kib(proc.pid, "VmHWM")
    print(f"\nchunked 100 MiB anonymous body: sent {sent / MiB:.0f} MiB before the answer in {took:.2f} s; "
          f"API RSS {rss_before / 1024:.1f} MiB before, {rss_after / 1024:.1f} MiB after, peak {peak / 1024:.1f} MiB")
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert _json_of(response)["code"] == "too_large"
    assert sent < 100 * MiB, "the whole body was accepted before an answer"
    assert (peak - rss_before) < 48 * 1024, (rss_before, peak)
    _get_ok(port)
