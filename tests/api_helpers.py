"""Factories and fixtures for API tests (reusable by other test modules).

Import what you need: ``from tests.api_helpers import make_image_tar, seed, submit``; the fixtures are
registered once for the whole suite (``pytest_plugins`` in tests/conftest.py).

- ``make_image_tar(tag=..., user=..., arch=..., gzip=..., layout="legacy"|"oci", layer_bytes=...)``:
  a tiny but valid ``docker save`` archive built in memory (or one made wrong on purpose).
- ``seed(session, ...)``: a challenge with tracks, two teams with one member each, an organizer, tokens.
- fixtures ``db_settings`` (SQLite; also PostgreSQL with the ``dialects`` marker), ``app``, ``client``, ``world``.
"""

from __future__ import annotations

import gzip as gzip_mod
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, UTC

import pytest

from tests import factories
from tests.servers import LiveServer

__all__ = [
    "make_image_tar", "add_member", "World", "seed", "auth", "db_settings", "app", "client", "world",
    "pg_settings", "sqlite_settings", "LiveServer", "live", "image_id_of", "submit", "finish_run",
]


# ---------------------------------------------------------------------------------------------
# docker save archives
# ---------------------------------------------------------------------------------------------
def _add(tar: tarfile.TarFile, name: str, data: bytes, *, mtime: float = 0) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = mtime
    tar.addfile(info, io.BytesIO(data))


def _layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for name, data in files.items():
            _add(layer, name, data)
    return buf.getvalue()


def make_image_tar(*, tag: str | list[str] | None = "team/model:latest", user: str = "1000",
                   arch: str = "amd64", os_name: str = "linux", gzip: bool = False, layout: str = "legacy",
                   layer_bytes: int = 0, files: dict[str, bytes] | None = None, extra_members=None,
                   manifest=None, salt: str = "", config_override: bytes | None = None) -> bytes:
    """A ``docker save`` archive of one tiny image, built in memory.

    ``tag`` may be a list (several RepoTags) or None (no tag); ``manifest`` replaces manifest.json's
    entries; ``extra_members(tar)`` may add members (links, bad paths); ``salt`` changes the config (and
    so the image id); ``layer_bytes`` adds that many pseudo-random bytes to the layer.
    """
    files = dict(files or {"workspace/predict.sh": b"python3 -c 'print(1)'\n"})
    if layer_bytes:
        seed_bytes = hashlib.sha256(salt.encode()).digest()
        block = hashlib.shake_256(seed_bytes).digest(min(layer_bytes, 1 << 20))
        files["workspace/blob.bin"] = (block * (layer_bytes // len(block) + 1))[:layer_bytes]
    layer = _layer_tar(files)
    layer_digest = hashlib.sha256(layer).hexdigest()
    config = config_override if config_override is not None else json.dumps({
        "architecture": arch, "os": os_name,
        "config": {"User": user, "WorkingDir": "/workspace", "Cmd": ["/bin/sh"], "Labels": {"salt": salt}},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created_by": "COPY . /workspace"}],
    }, sort_keys=True).encode()
    config_digest = hashlib.sha256(config).hexdigest()
    tags = tag if isinstance(tag, list) else ([tag] if tag else None)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if layout == "oci":
            config_name = f"blobs/sha256/{config_digest}"
            layer_name = f"blobs/sha256/{layer_digest}"
            _add(tar, config_name, config)
            _add(tar, layer_name, layer)
            _add(tar, "index.json", json.dumps({"schemaVersion": 2, "manifests": []}).encode())
            _add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        else:
            config_name = f"{config_digest}.json"
            layer_name = f"{layer_digest}/layer.tar"
            _add(tar, config_name, config)
            _add(tar, f"{layer_digest}/VERSION", b"1.0")
            _add(tar, layer_name, layer)
        entries = manifest if manifest is not None else [
            {"Config": config_name, "RepoTags": tags, "Layers": [layer_name]}
        ]
        if extra_members is not None:
            extra_members(tar)
        _add(tar, "manifest.json", json.dumps(entries).encode())
    data = buf.getvalue()
    return gzip_mod.compress(data, compresslevel=1) if gzip else data


def image_id_of(archive: bytes) -> str:
    """The image id (config digest) of an archive made by ``make_image_tar``."""
    raw = gzip_mod.decompress(archive) if archive[:2] == b"\x1f\x8b" else archive
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        config = tar.extractfile(manifest[0]["Config"]).read()
    return "sha256:" + hashlib.sha256(config).hexdigest()


# ---------------------------------------------------------------------------------------------
# rows
# ---------------------------------------------------------------------------------------------
def add_member(session, *, team=None, name: str = "member", role: str = "participant") -> tuple[object, str]:
    """A member (of ``team``, or none) with a fresh API token; returns (member, token)."""
    return factories.member(session, team=team, name=name, role=role)


@dataclass
class World:
    """What ``seed`` made: ids and tokens."""

    challenge: str = "cvpr24"
    tracks: dict[str, int] = field(default_factory=dict)
    team_a: int = 0
    team_b: int = 0
    member_a: int = 0
    member_b: int = 0
    organizer: int = 0
    token_a: str = ""
    token_b: str = ""
    token_org: str = ""
    token_a2: str = ""


def seed(database_url: str, *, quota: int = 5, open_now: bool = True, **track_kw) -> World:
    """A challenge 'cvpr24' (tracks main, booster, repro, closed), teams A and B, an organizer, tokens."""
    from api.db import session_scope

    w = World()
    now = datetime.now(UTC)
    with session_scope(database_url) as s:
        ch = factories.challenge(s, slug=w.challenge, title="CVPR 2024 MedSAM on Laptop", description="test",
                                 demo=True)  # demo: uses the public tiny set
        common = dict(quota_per_day=quota, **{"testset": "tiny", **track_kw})
        if open_now:
            common.setdefault("opens_at", now - timedelta(days=1))
            common.setdefault("closes_at", now + timedelta(days=30))
        tracks = [
            factories.track(s, challenge=ch, slug="main", title="Main", kind="main", **common),
            factories.track(s, challenge=ch, slug="booster", title="Booster", kind="booster", **common),
            factories.track(s, challenge=ch, slug="repro", title="Reproducibility", kind="reproducibility", **common),
            factories.track(s, challenge=ch, slug="closed", title="Closed", kind="main", quota_per_day=quota,
                            opens_at=now - timedelta(days=10), closes_at=now - timedelta(days=1)),
        ]
        team_a = factories.team(s, "Team A", affiliation="A univ")
        team_b = factories.team(s, "Team B", affiliation="B univ")
        w.tracks = {t.slug: t.id for t in tracks}
        w.team_a, w.team_b = team_a.id, team_b.id
        ma, w.token_a = add_member(s, team=team_a, name="alice")
        _, w.token_a2 = add_member(s, team=team_a, name="anna")
        mb, w.token_b = add_member(s, team=team_b, name="bob")
        org, w.token_org = add_member(s, name="olga", role="organizer")
        w.member_a, w.member_b, w.organizer = ma.id, mb.id, org.id
    return w


def auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def sqlite_settings(settings):
    return settings


@pytest.fixture
def pg_settings(settings, migrated_postgres_url):
    settings.database_url = migrated_postgres_url
    return settings


@pytest.fixture
def db_settings(request, settings):
    """Embedded settings on SQLite; with ``@pytest.mark.dialects("sqlite", "postgres")`` (where the dialect
    matters: locks, concurrency, migrations) also on a fresh PostgreSQL database (tests/conftest.py)."""
    if getattr(request, "param", "sqlite") == "postgres":
        settings.database_url = request.getfixturevalue("migrated_postgres_url")
    return settings


_POOL: dict[tuple[object, ...], list] = {}  # composed apps by what create_app reads besides app.state.settings
_TAKEN: dict[tuple[object, ...], int] = {}  # how many of each pool the running test holds (reset per test)


def release_shared_apps() -> None:
    """A new test begins: every pooled app is free again (tests/conftest.py calls this before each test)."""
    _TAKEN.clear()


def shared_app(settings, *, migrate: bool = False):
    """The composed app (``server.app.create_app``) serving ``settings``, from a pool kept for the session.

    FastAPI builds every route's validation state at an app's first request (0.1-0.3 s for SegArena's routes), so
    a test takes an app already built and gives it its settings: all of SegArena's routes, pages and the lifespan
    read them from ``app.state.settings``, and the app's other state (the claim limiter) starts empty, as in a new
    app. The n-th app a test takes is its own (a test may serve two settings at once). The database must already be
    at the newest schema (``settings`` copies a migrated one; ``migrated_postgres_url``). Tests of what
    ``create_app`` itself does call it. ``migrate``: bring the database to the newest schema first, as ``create_app``
    does (10 ms when it is there already).
    """
    from server.app import create_app

    if migrate:
        from api.db import migrate as migrate_db

        migrate_db(settings.database_url)

    key = (settings.max_body_bytes,)  # BodyLimitMiddleware's limit is fixed when the app is built
    pool = _POOL.setdefault(key, [])
    taken = _TAKEN.get(key, 0)
    _TAKEN[key] = taken + 1
    if taken == len(pool):
        pool.append(create_app(settings, migrate=False))
    app = pool[taken]
    state = app.state
    for name in list(vars(state).get("_state", {})):
        delattr(state, name)
    state.settings = settings
    return app


@pytest.fixture
def app(db_settings):
    """The composed app serving this test's settings (:func:`shared_app`)."""
    return shared_app(db_settings)


@pytest.fixture
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def world(app, db_settings) -> World:
    return seed(db_settings.database_url)


@pytest.fixture
def live(app):
    """A ``LiveServer`` of the ``app`` fixture."""
    server = LiveServer(app)
    yield server
    server.stop()


def submit(client, token: str, *, track: str = "main", data: bytes | None = None, challenge: str = "cvpr24",
           content_type: str = "application/x-tar", **params):
    """POST an archive (default: a fresh valid one, unique per call) as the raw body; returns the response."""
    import uuid as _uuid

    body = data if data is not None else make_image_tar(salt=_uuid.uuid4().hex)
    return client.post(f"/api/challenges/{challenge}/tracks/{track}/submissions", params=params, content=body,
                       headers={**auth(token), "Content-Type": content_type})


def finish_run(database_url: str, submission_id: int, *, state: str = "succeeded", run_state: str | None = None,
               cases: list[dict] | None = None, cases_total: int | None = None, dsc: float | None = None,
               nsd: float | None = None, reason: str = "", **run_fields) -> None:
    """Play the worker: set the latest run's and the submission's state, add case results."""
    from sqlalchemy import select as _select

    from api.db import session_scope
    from api.models import CaseResult, CaseStatus, Run, RunState, Submission, SubmissionState, utcnow

    with session_scope(database_url) as s:
        sub = s.get(Submission, submission_id)
        run = s.scalars(_select(Run).where(Run.submission_id == submission_id).order_by(Run.attempt.desc())).first()
        run.state = RunState(run_state or state)
        run.reason = reason
        for key, value in run_fields.items():
            setattr(run, key, value)
        run.cases_total = cases_total if cases_total is not None else len(cases or [])
        for c in cases or []:
            s.add(CaseResult(run_id=run.id, case_id=c["case_id"], modality=c.get("modality", "CT"),
                             status=CaseStatus(c.get("status", "ok")), dsc=c.get("dsc", 0.9), nsd=c.get("nsd", 0.9),
                             runtime_s=c.get("runtime_s", 1.0), reason=c.get("reason", ""),
                             stdout_tail=c.get("stdout_tail", ""), stderr_tail=c.get("stderr_tail", ""),
                             per_class=c.get("per_class", {"1": {"dsc": 0.9, "nsd": 0.9}}), exit_code=c.get("exit_code", 0),
                             peak_memory_bytes=c.get("peak_memory_bytes", 1 << 20)))
        sub.state = SubmissionState(state)
        sub.reason = reason
        sub.dsc, sub.nsd = dsc, nsd
        if state in ("succeeded", "failed", "cancelled"):
            sub.finished_at = run.finished_at = utcnow()


def schema_test_world(settings, *, name: str) -> tuple[object, str, dict[str, object]]:
    """An app with one of every object, for generated requests over the whole OpenAPI schema.

    Returns (app, an organizer-with-team token, real ids by path-parameter name), so generated calls
    reach real objects as well as random ids."""
    from fastapi.testclient import TestClient

    from api.db import session_scope
    from api.models import ApiToken, Team

    app = shared_app(settings, migrate=True)
    w = seed(settings.database_url)
    with session_scope(settings.database_url) as s:
        _, token = add_member(s, team=s.get(Team, w.team_a), name=name, role="organizer")
        alice_token = s.query(ApiToken).filter(ApiToken.member_id == w.member_a).first().id
    with TestClient(app) as c:
        sub = submit(c, w.token_a).json()["id"]
        finish_run(settings.database_url, sub, state="succeeded", dsc=0.5, nsd=0.5, cases=[{"case_id": "c1"}])
        data = make_image_tar(salt=f"{name}-upload")
        upload = c.post("/api/challenges/cvpr24/tracks/main/uploads", json={"total_bytes": len(data)},
                        headers=auth(token)).json()["upload_id"]
    known = {"challenge": "cvpr24", "c": "cvpr24", "track": "main", "t": "main", "team_id": w.team_b,
             "member_id": w.member_b, "token_id": alice_token, "submission_id": sub, "upload_id": upload}
    return app, token, known
