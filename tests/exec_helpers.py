"""Helpers for the execution-host tests (worker/config, client, cache, shard, exec_tasks).

* :func:`build_exec_image` builds the test image of behaviour ``exec`` (tests/behaviours.py: it follows the input's
  name) with a unique label (a fresh image id, so tests can remove and load it without disturbing other tests'
  images).
* :func:`thin_archive` writes a small but real ``docker save`` archive of an image built on the local
  base image: the manifest and config are complete, the base's layers are left out. The engine's
  (legacy) loader skips layers it already has, so ``docker load`` of it restores a runnable image —
  without streaming the base's 800 MB through every test.
* :class:`FakeWorkerAPI` implements the worker routes of docs/worker-protocol.md (in memory) for the
  client and shard tests; serve it for real with ``tests.api_helpers.LiveServer``.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse


TOKEN = "wk_" + "t" * 40


def build_exec_image(client, base_image: str, *, salt: str | None = None) -> str:
    """Build the ``exec`` test image with a unique label; returns its (unique) image id."""
    from tests.worker_helpers import build_test_image

    return build_test_image(client, base_image, "exec", salt=salt or uuid.uuid4().hex)


class _GenReader(io.RawIOBase):
    def __init__(self, chunks) -> None:
        self._it, self._buf = iter(chunks), b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n], self._buf = self._buf[:n], self._buf[n:]
        return n


def thin_archive(client, image_id: str, base_image: str, dest: Path) -> tuple[Path, str, int]:
    """``docker save`` of ``image_id`` without the layers of ``base_image`` (streamed, hashed per layer);
    returns (path, sha256, size)."""
    base_layers = set(client.images.get(base_image).attrs["RootFS"]["Layers"])
    kept: list[tuple[tarfile.TarInfo, bytes | None]] = []
    stream = io.BufferedReader(_GenReader(client.images.get(image_id).save(named=True)), 1 << 20)
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if member.isfile():
                fh = tar.extractfile(member)
                digest, chunks = hashlib.sha256(), []
                while True:
                    chunk = fh.read(1 << 20)
                    if not chunk:
                        break
                    digest.update(chunk)
                    if len(chunks) < 64:  # base layers are hashed, not kept
                        chunks.append(chunk)
                if member.name.endswith("layer.tar") and f"sha256:{digest.hexdigest()}" in base_layers:
                    continue
                data = b"".join(chunks)
                assert len(data) == member.size, "a non-base member larger than 64 MiB"
                kept.append((member, data))
            else:
                kept.append((member, None))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as out:
        for member, data in kept:
            out.addfile(member, io.BytesIO(data) if data is not None else None)
    raw = dest.read_bytes()
    return dest, hashlib.sha256(raw).hexdigest(), len(raw)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_case(dest: Path, case_id: str, *, seed: int = 0) -> Path:
    """A small 2D case input (imgs, boxes) named ``<case_id>.npz``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    imgs = (rng.random((32, 40, 3)) * 255).astype(np.uint8)
    boxes = np.array([[4, 5, 15, 20], [20, 8, 35, 28]])
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{case_id}.npz"
    np.savez(path, imgs=imgs, boxes=boxes)
    return path


# ---------------------------------------------------------------------------------------------
# a fake API implementing the worker routes
# ---------------------------------------------------------------------------------------------
@dataclass
class FakeShard:
    spec: dict[str, Any]
    queue: str = "cpu"
    state: str = "queued"
    cancel: bool = False
    lost: bool = False  # the lease was taken away (requeued): heartbeats and uploads answer 409
    heartbeats: list[float] = field(default_factory=list)
    finished: list[dict[str, Any]] = field(default_factory=list)


class FakeWorkerAPI:
    """The worker routes of docs/worker-protocol.md over in-memory state (for the client/shard tests)."""

    def __init__(self, *, token: str = TOKEN, heartbeat_s: float = 1.0, allowed_queues: tuple[str, ...] = ("cpu",)):
        self.token = token
        self.heartbeat_s = heartbeat_s
        self.allowed_queues = allowed_queues
        self.shards: dict[int, FakeShard] = {}
        self.images: dict[str, Path] = {}
        self.inputs: dict[tuple[int, str], Path] = {}
        self.uploads: list[dict[str, Any]] = []
        self.hellos: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.fail: dict[str, int] = {}  # route name -> how many 503 answers to give first
        self.corrupt_images: set[str] = set()  # serve other bytes than announced
        self.cancel_on_upload: set[str] = set()  # case ids whose upload answer says cancel
        self.lock = threading.Lock()
        self._next = 1
        self.app = self._build()

    # -- set-up ---------------------------------------------------------------------------------
    def add_image(self, path: Path, sha256: str) -> None:
        self.images[sha256] = Path(path)

    def add_shard(self, *, image: dict[str, Any], cases: list[tuple[str, Path]], queue: str = "cpu",
                  caps: dict[str, Any] | None = None, run_id: int = 1, heartbeat_s: float | None = None) -> int:
        with self.lock:
            sid = self._next
            self._next += 1
        spec_cases = []
        for case_id, path in cases:
            data = Path(path).read_bytes()
            self.inputs[(sid, case_id)] = Path(path)
            spec_cases.append({"id": case_id, "file": Path(path).name, "sha256": hashlib.sha256(data).hexdigest(),
                               "bytes": len(data), "url": f"/api/worker/shards/{sid}/inputs/{case_id}"})
        spec = {"shard_id": sid, "lease": "", "run_id": run_id, "attempt": 1, "submission_id": 1,
                "heartbeat_s": heartbeat_s if heartbeat_s is not None else self.heartbeat_s, "image": image,
                "caps": {"cpus": 1.0, "memory_mb": 512, "gpus": 0, "case_timeout_s": 60, "pids_limit": 256,
                         "tmpfs_mb": 64, "allow_root": False, "output_max_bytes": 64 * 1024**2,
                         "output_max_files": 16, **(caps or {})},
                "cases": spec_cases}
        self.shards[sid] = FakeShard(spec=spec, queue=queue)
        return sid

    def uploads_of(self, shard_id: int) -> list[dict[str, Any]]:
        return [u for u in self.uploads if u["shard_id"] == shard_id]

    # -- the app --------------------------------------------------------------------------------
    def _build(self):  # noqa: C901 (one closure per fake route; mccabe counts the routes' branches into _build)
        app = FastAPI()
        api = self

        def err(status: int, code: str, message: str) -> JSONResponse:
            return JSONResponse({"code": code, "message": message}, status_code=status)

        def gate(request: Request, route: str) -> JSONResponse | None:
            api.requests.append((request.method, route))
            if request.headers.get("authorization") != f"Bearer {api.token}":
                return err(401, "unauthorized", "a worker token is required")
            left = api.fail.get(route, 0)
            if left > 0:
                api.fail[route] = left - 1
                return err(503, "unavailable", "try again")
            return None

        def shard_for(sid: int, lease: str) -> FakeShard | JSONResponse:
            shard = api.shards.get(sid)
            if shard is None:
                return err(404, "not_found", f"no shard {sid}")
            if shard.lost or lease != shard.spec["lease"] or shard.state != "running":
                return err(409, "lease_lost", "this worker no longer holds the shard")
            return shard

        @app.post("/api/worker/hello")
        async def hello(request: Request):
            if (bad := gate(request, "hello")) is not None:
                return bad
            body = await request.json()
            refused = [q for q in body.get("queues", []) if q not in api.allowed_queues]
            if refused:
                return err(403, "queue_forbidden", f"this token may not serve {', '.join(refused)}")
            api.hellos.append(body)
            return {"name": body["name"], "queues": body["queues"], "heartbeat_s": api.heartbeat_s}

        @app.post("/api/worker/claim")
        async def claim(request: Request):
            if (bad := gate(request, "claim")) is not None:
                return bad
            body = await request.json()
            with api.lock:
                for shard in api.shards.values():
                    if shard.state == "queued" and shard.queue == body.get("queue"):
                        shard.state = "running"
                        shard.spec["lease"] = uuid.uuid4().hex
                        shard.spec["claimed_by"] = body.get("name")
                        return shard.spec
            return Response(status_code=204)

        @app.get("/api/worker/images/{sha}")
        def image(sha: str, request: Request):
            if (bad := gate(request, "image")) is not None:
                return bad
            path = api.images.get(sha)
            if path is None:
                return err(404, "not_found", "no such image")

            def body():
                with open(path, "rb") as fh:
                    while chunk := fh.read(256 * 1024):
                        yield chunk
                if sha in api.corrupt_images:
                    yield b"tampered"

            return StreamingResponse(body(), media_type="application/x-tar", headers={"X-Content-SHA256": sha})

        @app.get("/api/worker/shards/{sid}/inputs/{case_id}")
        def case_input(sid: int, case_id: str, request: Request, lease: str = ""):
            if (bad := gate(request, "input")) is not None:
                return bad
            shard = shard_for(sid, lease)
            if isinstance(shard, JSONResponse):
                return shard
            return Response(api.inputs[(sid, case_id)].read_bytes(), media_type="application/octet-stream")

        @app.post("/api/worker/shards/{sid}/cases/{case_id}")
        async def upload(sid: int, case_id: str, request: Request):
            if (bad := gate(request, "upload")) is not None:
                return bad
            async with request.form() as form:
                meta = json.loads(form["meta"])
                output = form.get("output")
                data = await output.read() if output is not None else None
                name = getattr(output, "filename", None)
            shard = shard_for(sid, meta.get("lease", ""))
            if isinstance(shard, JSONResponse):
                return shard
            with api.lock:
                duplicate = any(u["shard_id"] == sid and u["case_id"] == case_id for u in api.uploads)
                if not duplicate:
                    api.uploads.append({"shard_id": sid, "case_id": case_id, "meta": meta, "output": data,
                                        "output_name": name, "at": time.monotonic()})
            cancel = shard.cancel or case_id in api.cancel_on_upload
            return {"cancel": cancel, **({"duplicate": True} if duplicate else {})}

        @app.post("/api/worker/shards/{sid}/heartbeat")
        async def heartbeat(sid: int, request: Request):
            if (bad := gate(request, "heartbeat")) is not None:
                return bad
            body = await request.json()
            shard = shard_for(sid, body.get("lease", ""))
            if isinstance(shard, JSONResponse):
                return shard
            shard.heartbeats.append(time.monotonic())
            return {"cancel": shard.cancel}

        @app.post("/api/worker/shards/{sid}/finish")
        async def finish(sid: int, request: Request):
            if (bad := gate(request, "finish")) is not None:
                return bad
            body = await request.json()
            shard = shard_for(sid, body.get("lease", ""))
            if isinstance(shard, JSONResponse):
                return shard
            shard.finished.append(body)
            shard.state = "done" if body.get("outcome") == "done" else "queued"
            return {"ok": True}

        return app


# ---------------------------------------------------------------------------------------------
# fixtures (import them into a test module)
# ---------------------------------------------------------------------------------------------
import os  # noqa: E402

import pytest  # noqa: E402

from tests.conftest import REDIS_URL  # noqa: E402
from tests.processes import INHERITED  # noqa: E402


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No SEGARENA_ variable of the developer's shell leaks into a WorkerConfig."""
    for key in list(os.environ):
        if key.startswith("SEGARENA_") and key not in {*INHERITED, "SEGARENA_TEST_REDIS_URL"}:
            monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env file is read
    return monkeypatch


@pytest.fixture
def fake_api():
    """A :class:`FakeWorkerAPI` served by uvicorn on 127.0.0.1 (real sockets)."""
    from tests.api_helpers import LiveServer

    api = FakeWorkerAPI()
    server = LiveServer(api.app)
    api.url = server.url
    yield api
    server.stop()


@pytest.fixture
def worker_config(clean_env, tmp_path, fake_api):
    """An execution host's configuration pointing at ``fake_api`` (own cache dir, own image lock dir)."""
    from worker.config import WorkerConfig

    return WorkerConfig(api_url=fake_api.url, worker_token=TOKEN, broker_url=REDIS_URL,
                        cache_dir=tmp_path / "cache", image_lock_dir=tmp_path / "image-locks",
                        worker_name="test-worker", http_retries=2, http_backoff_s=0.05, http_timeout_s=30)


@pytest.fixture
def make_client():
    """``make_client(config, **kw)``: a WorkerClient closed at the end of the test."""
    from worker.client import WorkerClient

    made: list = []

    def factory(config, **kw):
        made.append(WorkerClient(config, **kw))
        return made[-1]

    yield factory
    for c in made:
        c.close()


@pytest.fixture(scope="session")
def exec_image(docker_client, base_image, tmp_path_factory):
    """The exec test image (unique id) and its thin archive: {image_id, path, sha256, bytes}."""
    image_id = build_exec_image(docker_client, base_image)
    path, sha, size = thin_archive(docker_client, image_id, base_image,
                                   tmp_path_factory.mktemp("exec-image") / "exec.tar")
    yield {"image_id": image_id, "path": path, "sha256": sha, "bytes": size}
    try:
        docker_client.images.remove(image_id, force=True)
    except Exception:
        pass


def image_spec(image: dict[str, Any]) -> dict[str, Any]:
    """The ``image`` part of a shard spec for ``exec_image`` (or any {image_id, sha256, bytes})."""
    return {"sha256": image["sha256"], "bytes": image["bytes"], "image_id": image["image_id"],
            "url": f"/api/worker/images/{image['sha256']}"}


def remove_image(docker_client, image_id: str) -> None:
    import docker

    try:
        docker_client.images.remove(image_id, force=True)
    except docker.errors.ImageNotFound:
        pass


def load_events(docker_client, since: float, until: float) -> list[str]:
    """Image ids the engine reported a ``load`` event for in [since, until]."""
    events = docker_client.events(since=since, until=until, decode=True, filters={"type": "image", "event": "load"})
    return [e.get("id") for e in events]
