"""Shared fixtures: the real services (Docker engine, Redis, PostgreSQL) and fresh settings.

A missing service skips its tests on a developer machine but FAILS them under ``CI=true``:
CI must never pass by skipping what it is meant to check. ``./segarena.sh test`` starts them all;
``./segarena.sh test --fast`` runs what needs none of Docker, PostgreSQL and a browser and is not ``slow``
(SEGARENA_TEST_FAST=1).

Markers follow what a test really uses (:func:`pytest_collection_modifyitems`): ``docker`` for tests of the
Docker engine's fixtures and of tests/worker, tests/resilience, tests/system; ``postgres`` for the PostgreSQL
fixtures and the PostgreSQL variant of ``db_settings``; ``browser``; ``resilience`` for tests/resilience.
The database is migrated once per session: ``settings`` starts from a copy of a migrated SQLite file, and the
PostgreSQL variant from a copy (``CREATE DATABASE ... TEMPLATE``) of a migrated database.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

# Fixtures are registered once, here; test modules import helpers (functions, classes), not fixtures.
pytest_plugins = ["tests.api_helpers", "tests.exec_helpers", "tests.s3_helpers"]

# The CLI runs in-process in most tests (tests/cli_helpers.run_cli): its Rich consoles, made at import, read the
# terminal width once; the width a subprocess run got (COLUMNS=200) is set before anything imports them.
os.environ["COLUMNS"] = "200"
# Containers take host-wide locks on their pinned cores (worker/sandbox/host.CoreLocks: two timed runs never share a
# core). Every test runs its cases on core 0, so the locks of one shared directory made the containers of all test
# processes wait for each other (the hostile suite's time-outs held core 0 for seconds at a time): each test process,
# and the processes it starts (tests/processes.INHERITED), locks cores in a directory of its own.
CORE_LOCK_DIR = tempfile.mkdtemp(prefix="segarena-core-locks-")
os.environ["SEGARENA_CORE_LOCK_DIR"] = CORE_LOCK_DIR
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
FAST = os.environ.get("SEGARENA_TEST_FAST", "").lower() in {"1", "true", "yes"}
ROOT = Path(__file__).resolve().parents[1]
from api.settings import DEFAULT_BASE_IMAGE  # noqa: E402
BASE_IMAGE = os.environ.get("SEGARENA_BASE_IMAGE", DEFAULT_BASE_IMAGE)
PG_PORT = int(os.environ.get("SEGARENA_PG_PORT", "5432"))
# pytest-xdist: each worker process (gw0, gw1, ...) gets Redis databases of its own, so one worker's Celery
# processes never take another's tasks: gw<i> uses database 15 - 2i (REDIS_URL) and 14 - 2i (private_redis_url).
_XDIST_INDEX = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
_REDIS_SERVER, _, _REDIS_DB = os.environ.get("SEGARENA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15").rpartition("/")
_REDIS_DB_OWN = int(_REDIS_DB) - 2 * _XDIST_INDEX
REDIS_URL = f"{_REDIS_SERVER}/{_REDIS_DB_OWN}"


def private_redis_url() -> str:
    """A second Redis database for this test process (a test's own queue: flushed by the test that uses it)."""
    return f"{_REDIS_SERVER}/{_REDIS_DB_OWN - 1}"


def require(ok: bool, what: str) -> None:
    """Skip (developer machine) or fail (CI) when a service the test needs is missing."""
    if ok:
        return
    message = f"{what} is not available; run the tests with ./segarena.sh test, which starts it"
    if FAST:  # --fast runs what needs no Docker, PostgreSQL or browser; a test that does needs its marker
        pytest.fail(f"{message} (under --fast: if the test needs Docker, PostgreSQL or a browser, mark it "
                    "docker/postgres/browser)", pytrace=False)
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def pytest_unconfigure(config) -> None:
    shutil.rmtree(CORE_LOCK_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def docker_client():
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        require(False, f"the Docker engine ({exc.__class__.__name__})")
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    import docker

    try:
        docker_client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        require(False, f"the base image {BASE_IMAGE} (scripts/build-base-image.sh)")
    return BASE_IMAGE


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:
        require(False, f"Redis at {REDIS_URL} ({exc.__class__.__name__})")
    return REDIS_URL


def _pg_admin_url(dbname: str = "postgres") -> str:
    return f"postgresql+psycopg://segarena:segarena@127.0.0.1:{PG_PORT}/{dbname}"


@pytest.fixture(scope="session")
def postgres_server() -> str:
    try:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={PG_PORT} user=segarena password=segarena dbname=postgres", connect_timeout=3):
            pass
    except Exception as exc:
        require(False, f"PostgreSQL on 127.0.0.1:{PG_PORT} ({exc.__class__.__name__})")
    return _pg_admin_url()


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = "segarena_test_" + secrets.token_hex(6)
    dsn = f"host=127.0.0.1 port={PG_PORT} user=segarena password=segarena dbname=postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _pg_admin_url(name)
    from api.db import dispose_engines

    dispose_engines()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_template(postgres_server) -> str:
    """The name of a PostgreSQL database migrated once per session, the template of ``migrated_postgres_url``."""
    import psycopg

    from api.db import dispose_engines, migrate

    name = "segarena_tpl_" + secrets.token_hex(6)
    dsn = f"host=127.0.0.1 port={PG_PORT} user=segarena password=segarena dbname=postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate(_pg_admin_url(name))
    dispose_engines()  # a template may have no open connections
    yield name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def migrated_postgres_url(postgres_template):
    """A fresh PostgreSQL database at the newest schema for one test (a copy of the session's template)."""
    import psycopg

    name = "segarena_test_" + secrets.token_hex(6)
    dsn = f"host=127.0.0.1 port={PG_PORT} user=segarena password=segarena dbname=postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"')
    yield _pg_admin_url(name)
    from api.db import dispose_engines

    dispose_engines()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory) -> Path:
    """A SQLite database file at the newest schema, migrated once per session (``settings`` copies it)."""
    from api.db import dispose_engines, get_engine, migrate

    path = tmp_path_factory.mktemp("template") / "segarena.db"
    url = f"sqlite:///{path}"
    migrate(url)
    engine = get_engine(url)
    with engine.connect() as conn:  # one self-contained file: no -wal/-shm beside it
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.exec_driver_sql("PRAGMA journal_mode=DELETE")
    dispose_engines()
    return path


def _shared_testset(tmp_path_factory, name: str) -> Path:
    """A built-in set's data, generated once per test run: the xdist processes of one run share a base temporary
    directory, and the first to take the lock generates it (tiny: 1.6 s of CPU; once instead of once per process)."""
    import fcntl

    from data_manifests import materialize

    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-testsets"
    shared.mkdir(exist_ok=True)
    root, done = shared / name / name, shared / f"{name}.done"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            materialize(name, shared / name)
            done.touch()
    return root


@pytest.fixture(scope="session")
def tiny_testset(tmp_path_factory) -> Path:
    """The built-in ``tiny`` set's data, generated once per run (``settings`` links it; nothing writes it)."""
    return _shared_testset(tmp_path_factory, "tiny")


@pytest.fixture(scope="session")
def micro_testset(tmp_path_factory) -> Path:
    """The built-in ``micro`` set's data (tiny's first case of each modality), generated once per run."""
    return _shared_testset(tmp_path_factory, "micro")


@pytest.fixture(scope="module")
def tiny_copy(tiny_testset, tmp_path_factory) -> Path:
    """A module's own copy of the generated ``tiny`` set (``manifest.json`` and data), free to add files to."""
    dest = tmp_path_factory.mktemp("tiny") / "tiny"
    shutil.copytree(tiny_testset, dest)
    return dest


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link (1 ms for the whole set instead of 9 ms copied, in every test; nothing writes a test set in place:
    a repair replaces the folder), a copy across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@pytest.fixture
def settings(tmp_path, monkeypatch, migrated_sqlite, tiny_testset, micro_testset):
    """Embedded-mode settings in a fresh data dir (SQLite, embedded broker, local storage)."""
    from api.settings import Settings, get_settings

    from tests.processes import INHERITED

    for key in list(os.environ):
        if key.startswith("SEGARENA_") and key not in INHERITED:
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SEGARENA_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    s = Settings(data_dir=tmp_path / "data", base_image=BASE_IMAGE)
    s.ensure_dirs()
    db = s.data_dir / "segarena.db"
    if s.database_url == f"sqlite:///{db}" and not db.exists():
        shutil.copyfile(migrated_sqlite, db)  # migrating again is a no-op (already at head)
    # where a run's start materializes a built-in set (Storage.testset_dir("tiny") / "tiny"): hard links, checked
    # like any materialized set against the committed manifest when a run opens it
    assert s.storage_dir is not None
    for name, root in (("tiny", tiny_testset), ("micro", micro_testset)):
        shutil.copytree(root, s.storage_dir / "testsets" / name / name, copy_function=_link_or_copy)
    yield s
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_app_pool() -> None:
    """Each test takes its apps from the session's pool anew (tests.api_helpers.shared_app)."""
    from tests.api_helpers import release_shared_apps

    release_shared_apps()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


# Markers by what a test uses: its fixtures, or its directory (tests that need the service without a fixture
# carry the marker themselves).
FIXTURE_MARKERS = {
    "docker_client": "docker", "base_image": "docker", "exec_image": "docker",
    "postgres_server": "postgres", "postgres_url": "postgres", "pg_settings": "postgres",
    "migrated_postgres_url": "postgres", "postgres_template": "postgres",
    "redis_url": "redis",
}
DIRECTORY_MARKERS = {
    "tests/resilience/": ("resilience", "docker", "slow"),
    "tests/system/test_e2e.py": ("docker", "slow"),
    "tests/system/test_demo.py": ("docker", "slow"),
    "tests/system/test_scaleout.py": ("docker", "slow"),
    "tests/api/test_api_fuzz.py": ("slow",),  # generated requests over the whole schema: minutes
    "tests/api/test_api_concurrency.py": ("slow",),  # 20 simultaneous uploads, twice
}


def pytest_generate_tests(metafunc) -> None:
    """``db_settings``: SQLite, plus PostgreSQL where the dialect matters (locks, concurrency, migrations):
    a module or test opts in with ``@pytest.mark.dialects("sqlite", "postgres")``."""
    if "db_settings" not in metafunc.fixturenames:
        return
    defs = getattr(metafunc, "_arg2fixturedefs", {}).get("db_settings") or ()
    if defs and defs[-1].func.__module__ != "tests.api_helpers":
        return  # a module's own db_settings (e.g. local vs S3 storage) keeps its own parameters
    if any("db_settings" in str(m.args[0]) for m in metafunc.definition.iter_markers("parametrize")):
        return
    marker = metafunc.definition.get_closest_marker("dialects")
    dialects = marker.args if marker else ("sqlite",)
    params = [pytest.param(d, id=d, marks=[pytest.mark.postgres] if d == "postgres" else []) for d in dialects]
    metafunc.parametrize("db_settings", params, indirect=True)


# Files that take minutes mostly waiting (containers sleeping out time limits, processes and engines restarted, per-case
# delays): under --dist loadfile the test command runs them in lanes (:func:`pytest_xdist_make_scheduler`), a lane's
# files one after another in one xdist process, so that only that many processes wait at once while the others keep
# the CPUs busy with everything else. Every other file is a work unit of its own (its module fixtures run once).
# Lanes balanced on a run with 4 processes on 2 cores (seconds): hostile 238 + e2e 117, faults 198 + demo 120,
# scale-out 176 + interactive runs 78 + Docker restart 62.
LANES = {
    "tests/resilience/test_resilience_hostile.py": 1, "tests/system/test_e2e.py": 1,
    "tests/resilience/test_resilience_faults.py": 2, "tests/system/test_demo.py": 2,
    "tests/system/test_scaleout.py": 3, "tests/worker/test_interactive_runs.py": 3,
    "tests/resilience/test_resilience_docker_restart.py": 3,
}


def pytest_xdist_make_scheduler(config, log):
    """--dist loadfile, with the files of a lane (:data:`LANES`) as one work unit."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class LaneScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return f"lane {LANES[path]}" if path in LANES else path

    return LaneScheduling(config, log)


def pytest_collection_modifyitems(session, config, items) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        for fixture, marker in FIXTURE_MARKERS.items():
            if fixture in fixtures:
                item.add_marker(marker)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "postgres" in callspec.params.values():  # a test's own PostgreSQL variant
            item.add_marker("postgres")
        for prefix, markers in DIRECTORY_MARKERS.items():
            if item.nodeid.startswith(prefix):
                for marker in markers:
                    item.add_marker(marker)

    # The lanes first, then the expensive files (a file with a slow test, then one with a Docker test), each file's
    # tests kept together in their order (the test command keeps this order: --no-loadscope-reorder), so the long
    # work starts at once while hundreds of quick files remain to fill the other processes.
    weight: dict[str, int] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        weight[path] = max(weight.get(path, 0), 2 if item.get_closest_marker("slow") else
                           1 if item.get_closest_marker("docker") else 0)

    def key(item) -> tuple[int, int]:
        path = item.nodeid.split("::", 1)[0]
        return (LANES.get(path, len(LANES) + 1), -weight[path])

    items.sort(key=key)  # stable: collection order otherwise
