"""The trusted side of sharded execution (api/execution/, docs/worker-protocol.md), over real HTTP through the
app on SQLite and PostgreSQL: worker identities and token separation, fair claims, leases, bounded uploads,
idempotent results, trusted scoring of real outputs, finishing once, fail-fast, the shard reaper, cancel.

The tests play the execution host with the HTTP client (W2's worker/ is the real one)."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from datetime import timedelta

import numpy as np
import pytest
from tests.api_helpers import app, auth, client, db_settings, seed, submit  # noqa: F401 (fixtures)
from tests.conftest import private_redis_url
from sqlalchemy import func, select

from api.db import session_scope
from api.models import (
    AuditEvent, CaseResult, CaseStatus, Run, RunState, Shard, ShardState, Submission, SubmissionState, utcnow,
)


# ------------------------------------------------------------------------------------------------ helpers


def _worker(db_settings, name: str, queues=("cpu",)) -> str:
    from api.execution.identity import create_worker

    with session_scope(db_settings.database_url) as s:
        _, token = create_worker(s, db_settings, actor=None, name=name, queues=list(queues))
    return token


def _hello(client, token: str, name: str, **extra):
    body = {"name": name, "queues": ["cpu"], "host": f"host-{name}", "pid": 1, "cpu_model": "Test CPU", "cores": 2,
            "docker_version": "27.0", "calibration_s": 1.0, **extra}
    return client.post("/api/worker/hello", json=body, headers=auth(token))


def _world(client, db_settings, **track):
    """Sharded execution on; a seeded challenge; two worker identities that said hello. Shards keep the track's
    size (``shard_balance`` off: the split over the workers online is tests/execution/test_execution_split.py's)."""
    db_settings.execution = "sharded"
    db_settings.shard_balance = False
    track.setdefault("shard_size", 9)
    w = seed(db_settings.database_url, quota=20, **track)
    w.wt1, w.wt2 = _worker(db_settings, "w1"), _worker(db_settings, "w2")
    assert _hello(client, w.wt1, "w1").status_code == 200
    assert _hello(client, w.wt2, "w2").status_code == 200
    return w


def _submit(client, token) -> int:
    r = submit(client, token)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _run_of(db_settings, sub_id: int) -> int:
    with session_scope(db_settings.database_url) as s:
        return s.scalar(select(Run.id).where(Run.submission_id == sub_id).order_by(Run.attempt.desc()))


def _claim(client, token, name="w1", queue="cpu"):
    return client.post("/api/worker/claim", json={"name": name, "queue": queue}, headers=auth(token))


def _gt(db_settings, case_id: str) -> np.ndarray:
    from api.execution.testsets import load_testset
    from api.storage import Storage

    _m, root, index = load_testset("tiny", Storage.from_settings(db_settings))
    with np.load(root / index[case_id].gt.path) as z:
        return np.asarray(z["gts"])


def _npz(segs: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, segs=segs)
    return buf.getvalue()


def _upload(client, token, spec, case_id, *, status="ok", output: bytes | None = None, lease=None, **meta):
    body = {"lease": lease or spec["lease"], "status": status, "reason": meta.pop("reason", ""), "runtime_s": 0.5,
            "cpu_s": 0.4, "peak_memory_bytes": 1 << 20, "exit_code": 0 if status == "ok" else 1, "wall_s": 0.7,
            "stdout_tail": "out", "stderr_tail": "err", "container_params": {"cpus": 1.0}, **meta}
    files = {"meta": (None, json.dumps(body))}
    if output is not None:
        files["output"] = (f"{case_id}.npz", output, "application/octet-stream")
    return client.post(f"/api/worker/shards/{spec['shard_id']}/cases/{case_id}", files=files, headers=auth(token))


def _perfect(client, token, db_settings, spec, case_id):
    return _upload(client, token, spec, case_id, output=_npz(_gt(db_settings, case_id)))


# ------------------------------------------------------------------------------------------------ identity


def test_worker_identities_and_token_separation(client, db_settings):
    from tests.api.test_api_authz import MATRIX

    w = seed(db_settings.database_url)
    r = client.post("/api/admin/workers", json={"name": "box-1", "queues": ["cpu"]}, headers=auth(w.token_org))
    assert r.status_code == 201, r.text
    wtoken = r.json()["token"]
    assert r.json()["queues"] == ["cpu"]
    # the trusted queue and undeclared queues are refused, and a name is unique while active
    for queues in (["score"], ["nope"]):
        bad = client.post("/api/admin/workers", json={"name": "box-2", "queues": queues}, headers=auth(w.token_org))
        assert bad.status_code == 422 and queues[0] in bad.json()["message"], bad.text
    assert client.post("/api/admin/workers", json={"name": "box-1", "queues": ["cpu"]},
                       headers=auth(w.token_org)).status_code == 409
    # a worker token gets 403 on every non-worker route (API and pages)
    ctx = {"team_a": w.team_a, "member_a": w.member_a, "spare_token_a": 1, "sub_a": 1, "done_a": 1, "upload_a": "x",
           "upload_a2": "y", "worker_name": "box-1", "sha_a": "0" * 64, "shard": 1, "case": "c", "signup_1": 1,
           "signup_2": 2, "webhook": 1}
    problems = []
    for method, path, kwargs, _ in MATRIX:
        if path.startswith("/api/worker/"):
            continue
        kw = dict(kwargs) if isinstance(kwargs, dict) else {"content": b"x" * 10}
        r = client.request(method, path.format(**ctx), headers={**kw.pop("headers", {}), **auth(wtoken)}, **kw)
        if r.status_code != 403:
            problems.append(f"{method} {path}: {r.status_code} {r.text[:120]}")
    for path in ("/api/challenges/cvpr24/tracks/main/leaderboard", "/api/challenges/cvpr24/tracks/main/leaderboard.csv",
                 "/api/challenges/cvpr24/tracks/main/stability"):
        r = client.get(path, headers=auth(wtoken))
        if r.status_code != 403:
            problems.append(f"GET {path}: {r.status_code}")
    # pages treat a token they refuse as no token (the public view): a worker token gains nothing there
    for page in ("/admin/runs/1", "/status"):
        r, anon = client.get(page, headers=auth(wtoken)), client.get(page)
        if r.status_code != anon.status_code or ("Organizer" in r.text) != ("Organizer" in anon.text):
            problems.append(f"page {page}: {r.status_code} differs from the anonymous view {anon.status_code}")
    with session_scope(db_settings.database_url) as s:
        from api.auth.service import start_web_session

        assert start_web_session(session=s, token=wtoken, hours=1) is None  # no page sign-in with a worker token
    assert not problems, "\n".join(problems)
    # participant and organizer tokens get 403 on the worker routes
    for token in (w.token_a, w.token_org):
        assert _hello(client, token, "x").status_code == 403
    # hello: only declared queues this token may serve, never the trusted queue
    assert _hello(client, wtoken, "box-1a", queues=["score"]).status_code == 403
    assert _hello(client, wtoken, "box-1a", queues=["gpu"]).status_code == 403
    ok = _hello(client, wtoken, "box-1a")
    assert ok.status_code == 200 and ok.json()["queues"] == ["cpu"] and ok.json()["heartbeat_s"] > 0
    listing = client.get("/api/admin/workers", headers=auth(w.token_org)).json()
    node = listing[0]["nodes"][0]
    assert node["name"] == "box-1a" and node["calibration_s"] == 1.0 and node["cases_run"] == 0
    assert node["last_seen_at"]
    # revoke: the token stops working at once
    assert client.post("/api/admin/workers/box-1/revoke", headers=auth(w.token_org)).json()["revoked"] is True
    assert _hello(client, wtoken, "box-1a").status_code == 401


def test_bootstrap_worker_token(db_settings):
    from fastapi.testclient import TestClient

    from server.app import create_app

    db_settings.bootstrap_worker_token = "sa_bootstrap_worker_token_for_tests_0123456789"
    with TestClient(create_app(db_settings)) as c:
        r = _hello(c, db_settings.bootstrap_worker_token, "embedded")
        assert r.status_code == 200 and r.json()["queues"] == ["cpu"], r.text
    with TestClient(create_app(db_settings)) as c:  # start-up again: no second identity
        pass
    from api.models import Member, Role

    with session_scope(db_settings.database_url) as s:
        assert s.scalar(select(func.count()).select_from(Member).where(Member.role == Role.worker)) == 1


# ------------------------------------------------------------------------------------------------ claims


def test_split_and_fair_claims_across_teams(client, db_settings):
    w = _world(client, db_settings)
    sub_a1, sub_a2 = _submit(client, w.token_a), _submit(client, w.token_a)
    _submit(client, w.token_b)
    with session_scope(db_settings.database_url) as s:
        shards = s.scalars(select(Shard).order_by(Shard.id)).all()
        assert len(shards) == 9 and all(sh.task_id for sh in shards)  # 27 cases / 9 per shard, 3 runs; sent
        assert sorted(c for sh in shards if sh.run_id == _run_of(db_settings, sub_a1) for c in sh.case_ids) == \
            sorted(c for sh in shards[:3] for c in sh.case_ids)
        team = {sh.id: (s.get(Submission, s.get(Run, sh.run_id).submission_id).team_id) for sh in shards}
    order = []
    for _ in range(6):
        r = _claim(client, w.wt1)
        assert r.status_code == 200, r.text
        order.append(team[r.json()["shard_id"]])
    # never claimed first, then the team whose latest shard was claimed least recently
    assert order == [w.team_a, w.team_b] * 3, order
    with session_scope(db_settings.database_url) as s:
        run = s.get(Run, _run_of(db_settings, sub_a1))
        assert run.state == RunState.running and run.started_at and run.worker_host == "host-w1"
        assert run.cpu_model == "Test CPU" and run.cases_total == 27
        assert s.get(Submission, sub_a1).state == SubmissionState.running
        assert s.get(Submission, sub_a2).state == SubmissionState.queued  # B's turn came before A's second run
    for _ in range(3):
        assert _claim(client, w.wt2, "w2").status_code == 200
    assert _claim(client, w.wt2, "w2").status_code == 204
    # a queue the token may not serve, or a name that never said hello / is another identity's
    assert _claim(client, w.wt1, queue="gpu").status_code == 403
    assert _claim(client, w.wt1, name="w2").status_code == 403
    assert _claim(client, w.wt1, name="ghost").status_code == 409


@pytest.mark.dialects("sqlite", "postgres")  # the dialect matters here: locks, concurrency
def test_claim_is_atomic_under_concurrency(client, db_settings):
    w = _world(client, db_settings, shard_size=3)  # 9 shards
    _submit(client, w.token_a)
    from api.execution.identity import WorkerIdentity
    from api.execution.shards import claim_shard

    with session_scope(db_settings.database_url) as s:
        from api.models import Member

        m1 = s.scalar(select(Member.id).where(Member.name == "w1"))
    ident = WorkerIdentity(m1, "w1", ("cpu",))
    got: list[int] = []
    lock = threading.Lock()

    def loop():
        while True:
            spec = claim_shard(db_settings, ident, name="w1", queue="cpu")
            if spec is None:
                return
            with lock:
                got.append(spec["shard_id"])

    threads = [threading.Thread(target=loop) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == 9 and len(set(got)) == 9


# ------------------------------------------------------------------------------------------------ leases


def test_leases_downloads_and_holder_checks(client, db_settings):
    w = _world(client, db_settings)
    sub = _submit(client, w.token_a)
    spec = _claim(client, w.wt1).json()
    assert spec["caps"]["case_timeout_s"] > 0 and spec["image"]["url"].endswith(spec["image"]["sha256"])
    assert len(spec["cases"]) == 9 and spec["attempt"] == 1 and spec["submission_id"] == sub
    # image: the holder gets the archive streamed with its digest; another identity does not
    img = client.get(spec["image"]["url"], headers=auth(w.wt1))
    assert img.status_code == 200 and img.headers["x-content-sha256"] == spec["image"]["sha256"]
    assert hashlib.sha256(img.content).hexdigest() == spec["image"]["sha256"] and len(img.content) == spec["image"]["bytes"]
    assert client.get(spec["image"]["url"], headers=auth(w.wt2)).status_code == 403
    # inputs: lease holder only, and only the shard's cases
    case = spec["cases"][0]
    got = client.get(case["url"], params={"lease": spec["lease"]}, headers=auth(w.wt1))
    assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == case["sha256"] == got.headers["x-content-sha256"]
    assert client.get(case["url"], params={"lease": "wrong-lease-xyz"}, headers=auth(w.wt1)).status_code == 409
    assert client.get(case["url"], params={"lease": spec["lease"]}, headers=auth(w.wt2)).status_code == 403
    other = f"/api/worker/shards/{spec['shard_id']}/inputs/3DBox_XX_9999"
    assert client.get(other, params={"lease": spec["lease"]}, headers=auth(w.wt1)).status_code == 404
    # another worker cannot post for, heartbeat or finish a shard it does not hold
    assert _perfect(client, w.wt2, db_settings, spec, case["id"]).status_code == 403
    assert _upload(client, w.wt2, spec, case["id"], status="crash", lease="not-the-lease").status_code == 409
    hb = f"/api/worker/shards/{spec['shard_id']}/heartbeat"
    assert client.post(hb, json={"lease": spec["lease"]}, headers=auth(w.wt2)).status_code == 403
    assert client.post(hb, json={"lease": "not-the-lease"}, headers=auth(w.wt1)).status_code == 409
    r = client.post(hb, json={"lease": spec["lease"]}, headers=auth(w.wt1))
    assert r.status_code == 200 and r.json() == {"cancel": False}
    # a case of another shard of the same run is refused
    with session_scope(db_settings.database_url) as s:
        foreign = s.scalars(select(Shard).where(Shard.id != spec["shard_id"])).first().case_ids[0]
    assert _upload(client, w.wt1, spec, foreign, status="crash").status_code == 404
    with session_scope(db_settings.database_url) as s:
        assert s.scalar(select(func.count()).select_from(CaseResult)) == 0


def test_upload_bounds(client, db_settings):
    w = _world(client, db_settings)
    _submit(client, w.token_a)
    db_settings.output_max_bytes = 4096
    db_settings.worker_meta_max_bytes = 4096
    spec = _claim(client, w.wt1).json()
    cid = spec["cases"][0]["id"]
    big = _upload(client, w.wt1, spec, cid, output=b"\0" * 50_000)
    assert big.status_code == 413 and "SEGARENA_OUTPUT_MAX_BYTES" in big.json()["message"], big.text
    url = f"/api/worker/shards/{spec['shard_id']}/cases/{cid}"
    for meta in ("{not json", "[1, 2]", json.dumps({"lease": spec["lease"]}),
                 json.dumps({"lease": spec["lease"], "status": "exploded"}),
                 json.dumps({"lease": spec["lease"], "status": "ok", "runtime_s": -1})):
        r = client.post(url, files={"meta": (None, meta)}, headers=auth(w.wt1))
        assert r.status_code == 422 and set(r.json()) >= {"code", "message"}, (meta, r.text)
    r = client.post(url, files={"meta": (None, json.dumps({"lease": spec["lease"], "status": "crash",
                                                           "stdout_tail": "x" * 10_000}))}, headers=auth(w.wt1))
    assert r.status_code == 413, r.text
    r = client.post(url, content=b"{}", headers={**auth(w.wt1), "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    # a chunked body (no Content-Length) is cut off while it streams in, at output + meta + overhead
    head = b'--zz\r\nContent-Disposition: form-data; name="output"; filename="a.npz"\r\n\r\n'

    def chunks():
        yield head
        for _ in range(40):
            yield b"\0" * 8192

    r = client.post(url, content=chunks(), headers={**auth(w.wt1), "Content-Type": "multipart/form-data; boundary=zz"})
    assert r.status_code == 413, r.text
    big_declared = client.post(url, content=b"\0" * 200_000, headers={**auth(w.wt1),
                               "Content-Type": "multipart/form-data; boundary=zz"})
    assert big_declared.status_code == 413, big_declared.text
    # a long reason is stored bounded
    r = _upload(client, w.wt1, spec, cid, status="crash", reason="r" * 3000)
    assert r.status_code == 200, r.text
    with session_scope(db_settings.database_url) as s:
        rows = s.scalars(select(CaseResult)).all()
        assert len(rows) == 1 and len(rows[0].reason) < 2200 and rows[0].status == CaseStatus.crash


# ------------------------------------------------------------------------------------------------ scoring


@pytest.mark.dialects("sqlite", "postgres")  # the dialect matters here: locks, concurrency
def test_run_scores_real_outputs_and_finishes_once(client, db_settings):
    from api.execution.scoring import maybe_finish_run, score_case

    w = _world(client, db_settings, shard_size=14)  # 2 shards
    sub = _submit(client, w.token_a)
    run_id = _run_of(db_settings, sub)
    specs = [_claim(client, w.wt1).json(), _claim(client, w.wt2, "w2").json()]
    ids = []
    for spec, token in zip(specs, (w.wt1, w.wt2)):
        for i, case in enumerate(spec["cases"]):
            if i == 0 and spec is specs[0]:
                r = _upload(client, token, spec, case["id"], output=b"PK\x03\x04 this is not an npz")
            else:
                r = _perfect(client, token, db_settings, spec, case["id"])
            assert r.status_code == 200 and r.json()["duplicate"] is False, r.text
            ids.append(r.json()["case_result_id"])
    # a repeated upload is answered as a duplicate and recorded once
    again = _perfect(client, w.wt1, db_settings, specs[0], specs[0]["cases"][1]["id"])
    assert again.status_code == 200 and again.json()["duplicate"] is True
    with session_scope(db_settings.database_url) as s:
        rows = s.scalars(select(CaseResult).where(CaseResult.run_id == run_id)).all()
        assert len(rows) == 27 and not any(r.scored for r in rows)
        assert {r.worker_name for r in rows} == {"w1", "w2"} and all(r.shard_id and r.wall_s == 0.7 for r in rows)
        assert s.get(Run, run_id).container_params == {"cpus": 1.0}
    for spec, token in zip(specs, (w.wt1, w.wt2)):
        r = client.post(f"/api/worker/shards/{spec['shard_id']}/finish", json={"lease": spec["lease"], "outcome": "done"},
                        headers=auth(token))
        assert r.status_code == 200 and r.json() == {"cancel": False}
    assert not maybe_finish_run(db_settings, run_id)  # cases still unscored
    from api.storage import Storage

    storage = Storage.from_settings(db_settings)
    for cid in ids[:-1]:
        score_case(db_settings, cid)
    # the last case is scored by two scorers at once: the run finishes once
    threads = [threading.Thread(target=score_case, args=(db_settings, ids[-1])) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert score_case(db_settings, ids[0]) is None  # idempotent
    with session_scope(db_settings.database_url) as s:
        rows = {r.case_id: r for r in s.scalars(select(CaseResult).where(CaseResult.run_id == run_id))}
        bad = rows[specs[0]["cases"][0]["id"]]
        assert bad.status == CaseStatus.invalid_output and bad.dsc == 0 and "invalid prediction" in bad.reason
        good = [r for r in rows.values() if r is not bad]
        assert all(r.status == CaseStatus.ok and r.dsc == 1.0 and r.nsd == 1.0 and r.scored for r in good)
        run, s_ = s.get(Run, run_id), s.get(Submission, sub)
        assert run.state == RunState.succeeded and run.reason == "1 of 27 cases failed", run.reason
        assert s_.state == SubmissionState.succeeded and abs(s_.dsc - 26 / 27) < 1e-9 and s_.aggregates["ok"] == 26
        assert s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "run.succeeded")) == 1
        assert all(sh.state == ShardState.done for sh in s.scalars(select(Shard)))
    assert not maybe_finish_run(db_settings, run_id)
    assert not (storage.root / "runs" / str(run_id)).exists() or not any((storage.root / "runs" / str(run_id)).rglob("*.npz"))
    listing = client.get("/api/admin/workers", headers=auth(w.token_org)).json()
    assert sum(w_["cases_run"] for w_ in listing) == 27


def test_fail_fast_stops_the_run_and_cancels_its_shards(client, db_settings):
    w = _world(client, db_settings, shard_size=5, fail_fast_cases=3)
    sub = _submit(client, w.token_a)
    run_id = _run_of(db_settings, sub)
    spec = _claim(client, w.wt1).json()
    other = _claim(client, w.wt2, "w2").json()
    for case in spec["cases"][:3]:
        r = _upload(client, w.wt1, spec, case["id"], status="crash", reason="predict.sh exited with code 1")
        assert r.status_code == 200, r.text
    assert r.json()["cancel"] is True
    with session_scope(db_settings.database_url) as s:
        run, s_ = s.get(Run, run_id), s.get(Submission, sub)
        assert run.state == RunState.failed and run.reason.startswith("stopped after the first 3 cases failed: "
                                                                      "predict.sh exited with code 1 — make predict.sh exit 0")
        assert "(24 remaining cases were not run)" in run.reason
        assert s_.state == SubmissionState.failed and s_.reason == run.reason and s_.aggregates["stopped_early"] is True
        assert {sh.state for sh in s.scalars(select(Shard).where(Shard.run_id == run_id))} == {ShardState.cancelled}
    # running holders learn it from their next heartbeat and upload
    r = client.post(f"/api/worker/shards/{other['shard_id']}/heartbeat", json={"lease": other["lease"]}, headers=auth(w.wt2))
    assert r.status_code == 200 and r.json()["cancel"] is True
    assert _upload(client, w.wt2, other, other["cases"][0]["id"], status="crash").json()["cancel"] is True
    assert _claim(client, w.wt1).status_code == 204


# ------------------------------------------------------------------------------------------------ reaper and cancel


@pytest.mark.dialects("sqlite", "postgres")  # the dialect matters here: locks, concurrency
def test_reaper_requeues_a_stale_shard_and_refuses_the_old_lease(client, db_settings):
    from api.execution.shards import reap_shards

    w = _world(client, db_settings, shard_size=27)
    _submit(client, w.token_a)
    first = _claim(client, w.wt1).json()
    assert reap_shards(db_settings)["requeued"] == []  # fresh heartbeat
    later = utcnow() + timedelta(seconds=db_settings.heartbeat_timeout_s + 5)
    out = reap_shards(db_settings, now=later)
    assert out["requeued"] == [first["shard_id"]] and out["sent"] == [first["shard_id"]]
    hb = f"/api/worker/shards/{first['shard_id']}/heartbeat"
    assert client.post(hb, json={"lease": first["lease"]}, headers=auth(w.wt1)).status_code == 409
    second = _claim(client, w.wt2, "w2").json()
    assert second["shard_id"] == first["shard_id"] and second["lease"] != first["lease"]
    assert _upload(client, w.wt1, first, first["cases"][0]["id"], status="crash").status_code == 409
    assert client.post(hb, json={"lease": second["lease"]}, headers=auth(w.wt2)).status_code == 200
    # infra finish requeues with a new message; after max_attempts deliveries the run fails (not the team's fault)
    db_settings.max_attempts = 3
    fin = client.post(f"/api/worker/shards/{second['shard_id']}/finish",
                      json={"lease": second["lease"], "outcome": "infra", "reason": "docker died"}, headers=auth(w.wt2))
    assert fin.status_code == 200
    third = _claim(client, w.wt1).json()
    assert third["shard_id"] == first["shard_id"]
    fin = client.post(f"/api/worker/shards/{third['shard_id']}/finish",
                      json={"lease": third["lease"], "outcome": "infra", "reason": "docker died again"}, headers=auth(w.wt1))
    assert fin.status_code == 200
    with session_scope(db_settings.database_url) as s:
        sh = s.get(Shard, first["shard_id"])
        run = s.get(Run, sh.run_id)
        assert sh.deliveries == 3 and sh.state == ShardState.lost
        assert run.state == RunState.failed and "not your fault" in run.reason
        actions = s.scalars(select(AuditEvent.action).where(AuditEvent.action.like("shard.%"))).all()
        assert actions.count("shard.requeued") == 2 and actions.count("shard.lost") == 1


def test_cancel_stops_queued_shards_at_once_and_running_ones_at_next_heartbeat(client, db_settings):
    from api.execution.shards import reap_shards

    w = _world(client, db_settings)
    sub = _submit(client, w.token_a)
    r = client.post(f"/api/submissions/{sub}/cancel", headers=auth(w.token_a))
    assert r.status_code == 200, r.text
    with session_scope(db_settings.database_url) as s:
        assert {sh.state for sh in s.scalars(select(Shard))} == {ShardState.cancelled}
    assert _claim(client, w.wt1).status_code == 204
    # a running shard of a submission cancelled later (e.g. by an organizer): cancel in the answers
    sub2 = _submit(client, w.token_a)
    spec = _claim(client, w.wt1).json()
    with session_scope(db_settings.database_url) as s:
        s.get(Submission, sub2).state = SubmissionState.cancelled
    hb = client.post(f"/api/worker/shards/{spec['shard_id']}/heartbeat", json={"lease": spec["lease"]}, headers=auth(w.wt1))
    assert hb.json() == {"cancel": True}
    assert _upload(client, w.wt1, spec, spec["cases"][0]["id"], status="crash").json()["cancel"] is True
    out = reap_shards(db_settings)
    assert len(out["cancelled"]) == 0  # the running one is not stale; the queued ones were cancelled
    fin = client.post(f"/api/worker/shards/{spec['shard_id']}/finish", json={"lease": spec["lease"], "outcome": "done"},
                      headers=auth(w.wt1))
    assert fin.json() == {"cancel": True}
    with session_scope(db_settings.database_url) as s:
        run = s.get(Run, _run_of(db_settings, sub2))
        assert run.state == RunState.cancelled
        assert {sh.state for sh in s.scalars(select(Shard).where(Shard.run_id == run.id))} == {ShardState.cancelled}


# ------------------------------------------------------------------------------------------------ a real scorer process


def test_segarena_scorer_process_scores_uploaded_outputs(client, db_settings, redis_url, tmp_path):
    sqlite_settings = db_settings  # SQLite, then PostgreSQL
    """`segarena scorer` (the trusted Celery worker on queue `score`) scores what the upload route enqueued."""
    import os

    from tests.cli_helpers import ROOT, segarena_cmd
    from tests.processes import log_tail, spawn, stop
    from tests.waiting import wait_until

    broker = private_redis_url()  # a database of its own: the `score` queue is only this test's
    import redis

    redis.Redis.from_url(broker).flushdb()
    sqlite_settings.broker_url = broker
    w = _world(client, sqlite_settings, shard_size=27)
    sub = _submit(client, w.token_a)
    spec = _claim(client, w.wt1).json()
    env = {**os.environ, "SEGARENA_DATA_DIR": str(sqlite_settings.data_dir),
           "SEGARENA_DATABASE_URL": sqlite_settings.database_url, "SEGARENA_BROKER_URL": broker,
           "SEGARENA_STORAGE_DIR": str(sqlite_settings.storage_dir)}
    log = tmp_path / "scorer.log"
    proc = spawn(segarena_cmd("scorer", "--no-beat"), env=env, cwd=ROOT, log=log)
    try:
        ids = [_perfect(client, w.wt1, sqlite_settings, spec, c["id"]).json()["case_result_id"] for c in spec["cases"][:3]]

        def scored() -> bool:
            with session_scope(sqlite_settings.database_url) as s:
                return all(r.scored for r in s.scalars(select(CaseResult).where(CaseResult.id.in_(ids))))

        wait_until(scored, 90, "the scorer process to score the three uploaded cases", interval=0.5, proc=proc,
                   detail=lambda: "scorer log tail:\n" + log_tail(log))
        with session_scope(sqlite_settings.database_url) as s:
            rows = s.scalars(select(CaseResult).where(CaseResult.id.in_(ids))).all()
            assert [(r.scored, r.status, r.dsc, r.nsd) for r in rows] == [(True, CaseStatus.ok, 1.0, 1.0)] * 3
            assert s.get(Submission, sub).state == SubmissionState.running  # 24 cases still to come
    finally:
        stop(proc, timeout=20)
