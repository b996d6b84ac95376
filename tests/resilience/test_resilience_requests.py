"""Issue 9, bad requests: the malformed-upload corpus (one-shot and resumable), an image over the size
limit refused as its bytes arrive, 50 simultaneous uploads against a quota of 1, two organizers
re-running at once, a revoked token refused at once, tokens stored hashed, and response-schema
conformance of the whole OpenAPI schema.

Complements the API engineer's own tests (tests/test_api_fuzz.py: zero 5xx and {code, message} error
bodies over every operation; tests/test_api_authz.py: the route x role matrix); the concurrency tests
here run against a live uvicorn on 127.0.0.1 with PostgreSQL.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

import httpx
import pytest
from tests.api_helpers import (  # noqa: F401 (fixtures)
    LiveServer, add_member, app, auth, client, db_settings, finish_run, make_image_tar, seed, submit, world,
)
from sqlalchemy import func, inspect, select, text

from api.db import session_scope
from api.models import Run, Submission, Upload, UploadState
from tests.resilience_helpers import ReportRow, format_table, malformed_uploads, print_report

CLEAR = 15  # a message shorter than this cannot say what was wrong and what to do


def _disk(settings) -> list[str]:
    """Files under storage/uploads and storage/images (what a refused upload must not leave)."""
    root = settings.storage_dir
    return sorted(str(p.relative_to(root)) for d in ("uploads", "images") if (root / d).exists()
                  for p in (root / d).rglob("*") if p.is_file())


def _rows(settings) -> tuple[int, int]:
    with session_scope(settings.database_url) as s:
        subs = s.scalar(select(func.count()).select_from(Submission))
        open_uploads = s.scalar(select(func.count()).select_from(Upload).where(Upload.state == UploadState.open))
    return subs, open_uploads


def _is_clear_error(r) -> str:
    """'' when ``r`` is a 4xx JSON {code, message} error with a real message, else what is wrong."""
    if not 400 <= r.status_code < 500:
        return f"status {r.status_code}"
    try:
        body = r.json()
    except ValueError:
        return f"not JSON: {r.text[:80]!r}"
    if not (isinstance(body, dict) and body.get("code") and isinstance(body.get("message"), str)):
        return f"not an error body: {body}"
    if len(body["message"]) < CLEAR or body["code"] == "internal_error":
        return f"unclear message: {body}"
    return ""


def _resumable(client, token, data: bytes, *, chunk: int = 64 * 1024):
    """Open, PUT in chunks, complete; returns the first refusing response (or the last one)."""
    r = client.post("/api/challenges/cvpr24/tracks/main/uploads",
                    json={"filename": "model.tar.gz", "total_bytes": len(data)}, headers=auth(token))
    if r.status_code != 201:
        return r
    uid = r.json()["upload_id"]
    for start in range(0, len(data), chunk):
        end = min(len(data), start + chunk) - 1
        r = client.put(f"/api/uploads/{uid}", content=data[start:end + 1],
                       headers={**auth(token), "Content-Range": f"bytes {start}-{end}/{len(data)}",
                                "Content-Type": "application/octet-stream"})
        if r.status_code >= 300:
            return r
    return client.post(f"/api/uploads/{uid}/complete", headers=auth(token))


@pytest.mark.parametrize("path", ["one-shot", "resumable"])
def test_malformed_uploads_are_refused_clearly_and_leave_nothing(client, world, db_settings, path, request):
    corpus = malformed_uploads(make_image_tar)
    assert len(corpus) >= 12
    problems, rows = [], []
    for name, (data, what) in corpus.items():
        if path == "one-shot":
            r = submit(client, world.token_a, data=data)
        else:
            r = _resumable(client, world.token_a, data)
        wrong = _is_clear_error(r)
        left, (subs, open_uploads) = _disk(db_settings), _rows(db_settings)
        if left:
            wrong += f" files left: {left}"
        if subs or open_uploads:
            wrong += f" rows left: {subs} submissions, {open_uploads} open uploads"
        if wrong:
            problems.append(f"{name} ({what}): {wrong.strip()}")
        message = r.json().get("message", "") if r.headers.get("content-type", "").startswith("application/json") else ""
        rows.append(ReportRow(kind=name, expected="4xx", observed=str(r.status_code), lost=0,
                              duplicated=0, note=message))
    print_report(request,
                 format_table(rows, title=f"resilience: malformed uploads ({path}, {db_settings.database_url.split(':')[0]})"))
    assert not problems, "\n".join(problems)
    for escaped in ("/tmp/segarena-escape", "/tmp/segarena-escape-abs"):
        assert not os.path.exists(escaped), f"an archive member was written outside storage: {escaped}"


def test_wrong_content_ranges_are_refused_and_write_nothing(client, world, db_settings):
    data = make_image_tar(salt="ranges-resilience", layer_bytes=200_000)
    n = len(data)
    uid = client.post("/api/challenges/cvpr24/tracks/main/uploads", json={"total_bytes": n},
                      headers=auth(world.token_a)).json()["upload_id"]
    h = {**auth(world.token_a), "Content-Type": "application/octet-stream"}
    part = db_settings.storage_dir / "uploads" / f"{uid}.part"
    first = 1000
    assert client.put(f"/api/uploads/{uid}", content=data[:first],
                      headers={**h, "Content-Range": f"bytes 0-{first - 1}/{n}"}).status_code == 200
    bad = {
        "gap (starts past the received bytes)": (f"bytes {first + 10}-{first + 19}/{n}", data[first + 10:first + 20]),
        "overlap (starts before the received bytes)": (f"bytes 10-{first + 9}/{n}", data[10:first + 10]),
        "past the end": (f"bytes {first}-{n + 5}/{n}", data[first:] + b"xxxxxx"),
        "wrong total": (f"bytes {first}-{first + 9}/{n + 1}", data[first:first + 10]),
        "range longer than body": (f"bytes {first}-{first + 99}/{n}", data[first:first + 10]),
        "not a range": ("bytes=whatever", data[first:first + 10]),
    }
    problems = []
    for what, (header, body) in bad.items():
        r = client.put(f"/api/uploads/{uid}", content=body, headers={**h, "Content-Range": header})
        wrong = _is_clear_error(r)
        received = client.get(f"/api/uploads/{uid}", headers=auth(world.token_a)).json()["received_bytes"]
        if received != first or part.stat().st_size != first:
            wrong += f" received {received}, part file {part.stat().st_size} bytes (expected {first})"
        if wrong:
            problems.append(f"{what} [{header}]: {wrong.strip()}")
    assert not problems, "\n".join(problems)
    assert client.delete(f"/api/uploads/{uid}", headers=auth(world.token_a)).status_code == 204
    assert _disk(db_settings) == [] and _rows(db_settings) == (0, 0)


# ---------------------------------------------------------------------------------------------
# live server on PostgreSQL
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def pg_live(settings, postgres_url):
    from tests.api_helpers import shared_app

    settings.database_url = postgres_url
    app = shared_app(settings, migrate=True)
    server = LiveServer(app)
    try:
        yield server, settings
    finally:
        server.stop()


def _stream_until_answered(port: int, token: str, data: bytes, *, chunk: int) -> tuple[int, bytes]:
    """Send ``data`` as a chunked request body, stopping as soon as the server answers; returns
    (bytes of body sent, the answer's first bytes)."""
    import select
    import socket

    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        sock.sendall((f"POST /api/challenges/cvpr24/tracks/main/submissions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Authorization: Bearer {token}\r\nContent-Type: application/x-tar\r\n"
                      f"Transfer-Encoding: chunked\r\n\r\n").encode())
        sent = 0
        for i in range(0, len(data), chunk):
            ready, _, _ = select.select([sock], [], [], 0.02)
            if ready:
                break
            piece = data[i:i + chunk]
            try:
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            except OSError:
                break
            sent += len(piece)
        else:
            sock.sendall(b"0\r\n\r\n")
        sock.settimeout(30)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < 200:
            more = sock.recv(65536)
            if not more:
                break
            answer += more
        return sent, answer
    finally:
        sock.close()


@pytest.mark.postgres
def test_image_over_the_size_limit_is_refused_as_bytes_arrive(pg_live):
    server, settings = pg_live
    w = seed(settings.database_url)
    settings.max_upload_bytes = 256 * 1024
    data = make_image_tar(salt="too-big", layer_bytes=8 * 1024**2)
    assert len(data) > 30 * settings.max_upload_bytes
    with httpx.Client(base_url=server.url, timeout=60) as http:
        # declared too large: refused before a byte is read
        r = http.post("/api/challenges/cvpr24/tracks/main/submissions", content=data,
                      headers={**auth(w.token_a), "Content-Type": "application/x-tar"})
        assert r.status_code == 413 and not _is_clear_error(r), r.text
        r = http.post("/api/challenges/cvpr24/tracks/main/uploads", json={"total_bytes": len(data)},
                      headers=auth(w.token_a))
        assert r.status_code == 413 and not _is_clear_error(r), r.text
    # streamed without a declared length (chunked, over a raw socket): the answer must come while the
    # client is still sending, soon after the limit is crossed
    sent, answer = _stream_until_answered(server.port, w.token_a, data, chunk=32 * 1024)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"code"' in answer and b'"message"' in answer
    assert sent < 8 * settings.max_upload_bytes, f"{sent} bytes were taken before refusing ({settings.max_upload_bytes} allowed)"
    assert _disk(settings) == [] and _rows(settings) == (0, 0)


@pytest.mark.postgres
def test_fifty_simultaneous_uploads_against_a_quota_of_one(pg_live, request):
    server, settings = pg_live
    w = seed(settings.database_url, quota=1)
    n = 50
    archives = [make_image_tar(salt=f"fifty-{i}", layer_bytes=20_000) for i in range(n)]
    tokens = [w.token_a, w.token_a2]
    barrier = threading.Barrier(n)
    answers: list[tuple[str, int, str]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        token = tokens[i % 2]
        with httpx.Client(base_url=server.url, timeout=120) as http:
            barrier.wait()
            if i % 2:
                r = _resumable(http, token, archives[i], chunk=32 * 1024)
                how = "resumable"
            else:
                r = submit(http, token, data=archives[i])
                how = "one-shot"
            with lock:
                answers.append((how, r.status_code, r.json().get("code", "") if r.status_code >= 400 else ""))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    codes = sorted(a[1] for a in answers)
    accepted = [a for a in answers if a[1] == 201]
    refused = [a for a in answers if a[1] == 429 and a[2] == "quota_exceeded"]
    print_report(request, format_table([ReportRow(
        kind="50 uploads vs quota 1", expected="1 accepted", observed=f"{len(accepted)} accepted",
        note=f"{len(refused)} quota_exceeded, others {[c for c in codes if c not in (201, 429)]}, {elapsed:.1f} s")],
        title="resilience: concurrency (live uvicorn, PostgreSQL)"))
    assert len(answers) == n
    assert len(accepted) == 1, answers
    assert len(refused) == n - 1, answers
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(func.count()).select_from(Submission)) == 1
        assert s.scalar(select(func.count()).select_from(Run)) == 1
    images = settings.storage_dir / "images"
    assert len([p for p in images.iterdir()]) == 1


@pytest.mark.postgres
def test_two_organizers_rerunning_at_once_make_one_new_attempt(pg_live):
    server, settings = pg_live
    w = seed(settings.database_url)
    with session_scope(settings.database_url) as s:
        _, second_org = add_member(s, name="oscar", role="organizer")
    organizers = [w.token_org, second_org]
    rounds = 5
    with httpx.Client(base_url=server.url, timeout=60) as http:
        subs = [submit(http, w.token_a).json()["id"] for _ in range(rounds)]
    for sid in subs:
        finish_run(settings.database_url, sid, state="succeeded", dsc=0.5, nsd=0.5)
    outcomes = []
    for sid in subs:
        barrier = threading.Barrier(2)
        codes: list[int] = []

        def rerun(token: str, sid: int = sid, barrier: threading.Barrier = barrier, codes: list[int] = codes) -> None:
            with httpx.Client(base_url=server.url, timeout=60) as http:
                barrier.wait()
                codes.append(http.post(f"/api/admin/submissions/{sid}/rerun", headers=auth(token)).status_code)

        threads = [threading.Thread(target=rerun, args=(tok,)) for tok in organizers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with session_scope(settings.database_url) as s:
            attempts = [r.attempt for r in s.scalars(select(Run).where(Run.submission_id == sid).order_by(Run.attempt))]
        outcomes.append((sid, sorted(codes), attempts))
    assert all(codes == [201, 409] and attempts == [1, 2] for _, codes, attempts in outcomes), outcomes


@pytest.mark.postgres
def test_a_revoked_token_is_refused_at_once(pg_live):
    server, settings = pg_live
    w = seed(settings.database_url)
    with httpx.Client(base_url=server.url, timeout=30) as http, httpx.Client(base_url=server.url, timeout=30) as other:
        me = http.get("/api/me", headers=auth(w.token_a))
        assert me.status_code == 200
        assert other.get("/api/me", headers=auth(w.token_a)).status_code == 200  # a second kept-alive connection
        r = http.post(f"/api/tokens/{me.json()['token']['id']}/revoke", headers=auth(w.token_org))
        assert r.status_code == 200
        # the very next request, on either connection, is refused
        for conn in (other, http):
            r = conn.get("/api/me", headers=auth(w.token_a))
            assert r.status_code == 401 and "revoked" in r.json()["message"], r.text
            r = submit(conn, w.token_a)
            assert r.status_code == 401
        # the member's other token still works
        assert http.get("/api/me", headers=auth(w.token_a2)).status_code == 200
    assert _rows(settings)[0] == 0


@pytest.mark.postgres
def test_tokens_are_stored_hashed(pg_live):
    """Look in the database itself: no table holds a token in clear, only its SHA-256."""
    server, settings = pg_live
    w = seed(settings.database_url)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        team = http.post("/api/teams", json={"name": "Team Hashed"}, headers=auth(w.token_org)).json()
        created = http.post(f"/api/teams/{team['id']}/members", json={"name": "hana"}, headers=auth(w.token_org)).json()
        rotated = http.post(f"/api/members/{created['member']['id']}/tokens",
                            json={"label": "laptop"}, headers=auth(created["token"]))
        assert rotated.status_code == 201, rotated.text
        submit(http, created["token"])
    tokens = [w.token_a, w.token_a2, w.token_b, w.token_org, created["token"], rotated.json()["token"]]
    from api.db import get_engine

    engine = get_engine(settings.database_url)
    dump = []
    with engine.connect() as conn:
        for table in inspect(engine).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                dump.append(f"{table}: {tuple(row)}")
        hashes = set(conn.execute(text("SELECT token_hash FROM api_tokens")).scalars())
    blob = "\n".join(dump)
    assert len(dump) > 10
    for token in tokens:
        secret = token[len("sa_"):]
        assert secret not in blob and secret[8:40] not in blob, "a token is stored in clear"
        assert hashlib.sha256(token.encode()).hexdigest() in hashes


def test_responses_conform_to_the_openapi_schema(settings):
    """schemathesis' conformance checks over every operation, with real objects' ids: response bodies
    and content types as documented, and only documented status codes (tests/test_api_fuzz.py checks
    5xx and error bodies; this checks that every answer is the one the schema promises). The three checks
    judge the same generated requests (one generation pass: most of the cost)."""
    import schemathesis
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hsettings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.specs.openapi.checks import (
        content_type_conformance, response_schema_conformance, status_code_conformance,
    )

    from tests.api_helpers import schema_test_world

    app, token, known = schema_test_world(settings, name="conformance")
    checks = [response_schema_conformance, content_type_conformance, status_code_conformance]
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    checked = {"operations": 0, "2xx": 0}
    for result in schema.get_all_operations():
        operation = result.ok()
        checked["operations"] += 1
        params = {p.name: known[p.name] for p in operation.path_parameters if p.name in known} or None

        @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE, path_parameters=params))
        @hsettings(max_examples=8, deadline=None, database=None, derandomize=True,
                   suppress_health_check=list(HealthCheck))
        def run(case):
            response = case.call(headers={**(case.headers or {}), **auth(token)})
            if 200 <= response.status_code < 300:
                checked["2xx"] += 1
            try:
                case.validate_response(response, checks=checks)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                found = getattr(exc, "exceptions", None) or [exc]
                for e in found:
                    first = " ".join(str(e).split())[:220]
                    failures.append(f"{case.method} {operation.path} -> {response.status_code}: {first}")  # noqa: B023 (run() is called in this iteration)

        try:
            run()
        except Unsatisfiable:
            continue
    assert checked["operations"] >= 25 and checked["2xx"] >= 25, checked
    assert not failures, "\n".join(sorted(set(failures))[:25])
