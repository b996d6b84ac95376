"""The resumable upload of ``segarena submit``, over real TCP, against a server that speaks the uploads
contract (POST session / PUT Content-Range / GET offset / POST complete), through a proxy that drops
the connection mid-chunk. The full API is exercised by tests/test_e2e.py; this pins the client's
resume logic on its own, fast."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from segarena.client import ClientConfig, CliError, SegArenaClient
from segarena.upload import UploadState, upload_archive
from tests.cli_helpers import DroppingProxy, ThreadServer, run_cli


def contract_server() -> tuple[FastAPI, dict]:
    """A minimal in-memory implementation of the uploads contract (what the client relies on)."""
    app = FastAPI()
    db: dict = {"uploads": {}, "created": 0, "puts": 0, "completed": []}

    @app.post("/api/challenges/{c}/tracks/{t}/uploads")
    async def create(c: str, t: str, request: Request):
        body = await request.json()
        uid = str(uuid.uuid4())
        db["uploads"][uid] = {"total": body["total_bytes"], "data": bytearray(), "state": "open", "label": body.get("label")}
        db["created"] += 1
        return {"upload_id": uid, "received_bytes": 0}

    @app.put("/api/uploads/{uid}")
    async def put(uid: str, request: Request):
        up = db["uploads"].get(uid)
        if up is None:
            return JSONResponse({"code": "not_found", "message": "no such upload"}, 404)
        unit, _, rng = request.headers["content-range"].partition(" ")
        span, _, total = rng.partition("/")
        start, _, end = span.partition("-")
        body = b""
        try:
            async for piece in request.stream():  # a dropped connection ends here: nothing is stored
                body += piece
        except ClientDisconnect:
            return JSONResponse({"code": "disconnected", "message": "client went away"}, 400)
        if int(start) != len(up["data"]):
            return JSONResponse({"code": "offset_mismatch", "message": f"expected offset {len(up['data'])}"}, 416)
        assert len(body) == int(end) - int(start) + 1 and int(total) == up["total"]
        up["data"] += body
        db["puts"] += 1
        return {"received_bytes": len(up["data"]), "total_bytes": up["total"], "state": up["state"]}

    @app.get("/api/uploads/{uid}")
    async def get(uid: str):
        up = db["uploads"].get(uid)
        if up is None:
            return JSONResponse({"code": "not_found", "message": "no such upload"}, 404)
        return {"received_bytes": len(up["data"]), "total_bytes": up["total"], "state": up["state"]}

    @app.post("/api/uploads/{uid}/complete")
    async def complete(uid: str):
        up = db["uploads"][uid]
        if len(up["data"]) != up["total"]:
            return JSONResponse({"code": "incomplete", "message": "upload is incomplete"}, 409)
        up["state"] = "complete"
        db["completed"].append(hashlib.sha256(up["data"]).hexdigest())
        return {"id": len(db["completed"]), "state": "queued", "label": up["label"]}

    return app, db


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "team.tar.gz"
    path.write_bytes(os.urandom(5 * 2**20 + 12345))
    return path


def test_upload_survives_a_dropped_connection(tmp_path, archive):
    app, db = contract_server()
    state = UploadState(tmp_path / "state.json")
    with ThreadServer(app) as server, DroppingProxy(server.port) as proxy:
        proxy.drop_after(2 * 2**20 + 777)  # in the middle of the second 1 MiB-chunk connection... or the first
        client = SegArenaClient(ClientConfig(url=proxy.url, token="t", challenge="demo"))
        events = []
        sub = upload_archive(client, archive, track="main", label="x", chunk_bytes=2**20, state=state,
                             on_event=events.append, sleep=lambda _s: None)
        client.close()
    assert proxy.drops == 1, "the proxy should have cut one connection"
    assert any("retrying" in e for e in events), events
    assert db["created"] == 1, "a resumed upload must reuse its session"
    assert db["completed"] == [hashlib.sha256(archive.read_bytes()).hexdigest()]
    assert sub["id"] == 1 and sub["label"] == "x"
    assert state.get(UploadState.key(proxy.url, "/api/challenges/demo/tracks/main", archive, "x", None)) is None


def test_rerunning_after_interrupt_resumes_from_the_server_offset(tmp_path, archive):
    """Ctrl-C after two chunks; the same call again continues from the server's offset, same session."""
    app, db = contract_server()
    state = UploadState(tmp_path / "state.json")
    with ThreadServer(app) as server:
        client = SegArenaClient(ClientConfig(url=server.url, token="t", challenge="demo"))
        calls = []

        def interrupt_after_two(done, total):
            calls.append(done)
            if len(calls) == 3:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            upload_archive(client, archive, track="main", chunk_bytes=2**20, state=state, on_progress=interrupt_after_two)
        assert db["puts"] == 2 and db["completed"] == []
        seen = []
        sub = upload_archive(client, archive, track="main", chunk_bytes=2**20, state=state,
                             on_progress=lambda d, t: seen.append(d))
        client.close()
    assert seen[0] == 2 * 2**20, "the second run must start where the server stopped"
    assert db["created"] == 1 and db["puts"] == 6
    assert db["completed"] == [hashlib.sha256(archive.read_bytes()).hexdigest()] and sub["id"] == 1


def test_stale_session_starts_over(tmp_path, archive):
    app, db = contract_server()
    state = UploadState(tmp_path / "state.json")
    with ThreadServer(app) as server:
        key = UploadState.key(server.url, "/api/challenges/demo/tracks/main", archive, "", None)
        state.put(key, "gone-on-the-server")
        with SegArenaClient(ClientConfig(url=server.url, token="t", challenge="demo")) as client:
            upload_archive(client, archive, track="main", state=state)
    assert db["created"] == 1 and len(db["completed"]) == 1


def test_unreachable_server_is_one_clear_error(tmp_path, archive):
    with SegArenaClient(ClientConfig(url="http://127.0.0.1:9", token="t")) as client, \
            pytest.raises(CliError, match="cannot reach SegArena at http://127.0.0.1:9"):
        upload_archive(client, archive, track="main", state=UploadState(tmp_path / "s.json"))


def test_submit_command_resumes_through_the_cli(tmp_path, archive):
    """The console command end to end against the contract server, with the state file in the cache dir."""
    app, db = contract_server()
    with ThreadServer(app) as server, DroppingProxy(server.port) as proxy:
        proxy.drop_after(3 * 2**20)
        env = {"SEGARENA_URL": proxy.url, "SEGARENA_TOKEN": "t", "SEGARENA_CACHE_DIR": str(tmp_path / "cache"),
               "SEGARENA_CONFIG": str(tmp_path / "none.toml")}
        proc = run_cli("submit", str(archive), "--track", "main", "--chunk-mb", "1", "--label", "cli", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "submission 1: queued" in proc.stdout
    assert "retrying" in proc.stderr and proxy.drops == 1
    assert db["created"] == 1 and db["completed"] == [hashlib.sha256(archive.read_bytes()).hexdigest()]


def test_cli_errors_are_one_line(tmp_path):
    env = {"SEGARENA_URL": "http://127.0.0.1:9", "SEGARENA_TOKEN": "t", "SEGARENA_CONFIG": str(tmp_path / "c.toml")}
    proc = run_cli("status", "5", env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: cannot reach SegArena"), proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("status", env={**env, "SEGARENA_TOKEN": ""})
    assert proc.returncode == 1 and "no API token" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("submit", str(tmp_path / "missing.tar.gz"), env=env)
    assert proc.returncode == 1 and "no such file" in proc.stderr


def test_api_error_message_is_shown(tmp_path):
    app = FastAPI()

    @app.get("/api/submissions/{sid}")
    async def sub(sid: int):
        return JSONResponse({"code": "not_found", "message": f"submission {sid} does not exist or is not yours"}, 404)

    with ThreadServer(app) as server:
        proc = run_cli("status", "42", env={"SEGARENA_URL": server.url, "SEGARENA_TOKEN": "t",
                                            "SEGARENA_CONFIG": str(tmp_path / "c.toml")})
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: submission 42 does not exist or is not yours [HTTP 404, not_found]"


def test_config_file_and_precedence(tmp_path):
    env = {"SEGARENA_CONFIG": str(tmp_path / "cfg" / "config.toml"), "SEGARENA_URL": "", "SEGARENA_TOKEN": "",
           "SEGARENA_CHALLENGE": ""}
    proc = run_cli("configure", "--url", "http://127.0.0.1:8123", "--token", "sa_secret", "--challenge", "cvpr",
                   env=env, check=True)
    cfg = tmp_path / "cfg" / "config.toml"
    assert cfg.exists() and (cfg.stat().st_mode & 0o777) == 0o600
    shown = run_cli("configure", "--show", env=env, check=True).stdout
    assert "url: http://127.0.0.1:8123" in shown and "challenge: cvpr" in shown and "sa_sec" in shown
    assert "sa_secret" not in shown, "the full token must not be printed"
    shown = run_cli("configure", env={**env, "SEGARENA_CHALLENGE": "other"}, check=True).stdout
    assert "challenge: other" in shown, "the environment wins over the file"
    assert proc.returncode == 0

