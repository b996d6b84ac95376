"""Authorization matrix: every API route, called as anonymous, team A, team B and an organizer.

Team A owns the objects addressed (a submission, an upload, a member, a token). Another team's objects
answer 404 (never 403, so ids do not leak); organizer-only routes answer 403 to participants and 401
without a token. A route added to the API without a row here fails ``test_matrix_covers_every_route``.
"""

from __future__ import annotations

import pytest
from tests.api_helpers import (  # noqa: F401 (fixtures)
    app, auth, client, db_settings, finish_run, make_image_tar, seed, submit,
)

from api.db import session_scope
from api.deps import hash_token, new_token
from api.models import ApiToken

ROLES = ("anon", "a", "b", "org")


def _archive(ctx):
    return {"content": make_image_tar(salt=f"matrix-{ctx['role']}-{ctx.setdefault('n', 0) + 1}"),
            "headers": {"Content-Type": "application/x-tar"}}


def _signup(ctx):
    return {"json": {"name": f"Matrix {ctx['role']}", "email": f"matrix-{ctx['role']}@example.org",
                     "team_name": f"Matrix team {ctx['role']}"}}


def _chunk(ctx):
    data = ctx["upload_data"]
    return {"content": data, "headers": {"Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}",
                                         "Content-Type": "application/octet-stream"}}


# (method, path template, request kwargs (or a function of ctx), expected status per role)
MATRIX = [
    ("GET", "/health", None, (200, 200, 200, 200)),
    ("GET", "/api/me", None, (401, 200, 200, 200)),
    ("GET", "/api/teams", None, (401, 403, 403, 200)),
    ("POST", "/api/teams", {"json": {"name": "Team New"}}, (401, 403, 403, 201)),
    ("POST", "/api/teams/{team_a}/members", {"json": {"name": "newbie"}}, (401, 403, 403, 201)),
    ("POST", "/api/members/{member_a}/tokens", {"json": {"label": "x"}}, (401, 201, 404, 201)),
    ("POST", "/api/tokens/{spare_token_a}/revoke", None, (401, 200, 404, 200)),
    ("GET", "/api/challenges", None, (200, 200, 200, 200)),
    ("POST", "/api/challenges", {"json": {"slug": "new-challenge", "title": "New"}}, (401, 403, 403, 201)),
    ("GET", "/api/challenges/cvpr24", None, (200, 200, 200, 200)),
    ("GET", "/api/challenges/cvpr24/tracks/main", None, (200, 200, 200, 200)),
    ("PATCH", "/api/challenges/cvpr24/tracks/main", {"json": {"quota_per_day": 6}}, (401, 403, 403, 200)),
    ("POST", "/api/challenges/cvpr24/tracks/main/visibility", {"json": {"visibility": "public"}}, (401, 403, 403, 200)),
    ("POST", "/api/challenges/cvpr24/tracks/main/submissions", _archive, (401, 201, 201, 403)),
    ("POST", "/api/challenges/cvpr24/tracks/main/uploads", {"json": {"total_bytes": 1000}}, (401, 201, 201, 403)),
    ("PUT", "/api/uploads/{upload_a}", _chunk, (401, 200, 404, 404)),
    ("GET", "/api/uploads/{upload_a}", None, (401, 200, 404, 404)),
    ("POST", "/api/uploads/{upload_a}/complete", None, (401, 201, 404, 404)),
    ("DELETE", "/api/uploads/{upload_a2}", None, (401, 204, 404, 404)),
    ("GET", "/api/submissions", None, (401, 200, 200, 200)),
    ("GET", "/api/submissions/{sub_a}", None, (401, 200, 404, 200)),
    ("GET", "/api/submissions/{sub_a}/logs", None, (401, 200, 404, 200)),
    ("GET", "/api/submissions/{sub_a}/results", None, (401, 200, 404, 200)),
    ("POST", "/api/submissions/{sub_a}/cancel", None, (401, 200, 404, 200)),
    ("GET", "/api/admin/submissions/{sub_a}", None, (401, 403, 403, 200)),
    ("POST", "/api/admin/submissions/{done_a}/rerun", None, (401, 403, 403, 201)),
    ("POST", "/api/admin/submissions/{done_a}/exclude", {"json": {"excluded": True, "reason": "r"}}, (401, 403, 403, 200)),
    ("POST", "/api/admin/submissions/{done_a}/baseline", {"json": {"is_baseline": True}}, (401, 403, 403, 200)),
    ("GET", "/api/admin/export.csv", None, (401, 403, 403, 200)),
    # bulk re-run (a dry run: nothing queued) and compute accounting (tests/organizers)
    ("POST", "/api/challenges/cvpr24/tracks/main/rerun", {"json": {"which": "latest"}}, (401, 403, 403, 200)),
    ("GET", "/api/challenges/cvpr24/tracks/main/usage", None, (401, 200, 200, 200)),
    ("GET", "/api/me/usage", None, (401, 200, 200, 200)),
    ("GET", "/api/admin/usage", None, (401, 403, 403, 200)),
    ("GET", "/api/admin/audit", None, (401, 403, 403, 200)),
    ("GET", "/api/admin/runs/{shard}/workers", None, (401, 403, 403, 200)),
    ("GET", "/api/admin/members/{member_a}/tokens", None, (401, 403, 403, 200)),
    ("POST", "/api/admin/members/{member_a}/tokens/{spare_token_a}/revoke", None, (401, 403, 403, 200)),
    ("POST", "/api/admin/tokens/{spare_token_a}/revoke", None, (401, 403, 403, 200)),
    # worker identities (organizers) and the worker routes (worker tokens only: tests/test_execution_api.py
    # checks that a worker token gets 403 on every row above)
    ("POST", "/api/admin/workers", {"json": {"name": "matrix-new", "queues": ["cpu"]}}, (401, 403, 403, 201)),
    ("GET", "/api/admin/workers", None, (401, 403, 403, 200)),
    ("POST", "/api/admin/workers/{worker_name}/revoke", None, (401, 403, 403, 200)),
    ("POST", "/api/worker/hello", {"json": {"name": "w1", "queues": ["cpu"]}}, (401, 403, 403, 403)),
    ("POST", "/api/worker/ping", {"json": {"name": "w1"}}, (401, 403, 403, 403)),
    ("POST", "/api/worker/claim", {"json": {"name": "w1", "queue": "cpu"}}, (401, 403, 403, 403)),
    ("GET", "/api/worker/images/{sha_a}", None, (401, 403, 403, 403)),
    ("GET", "/api/worker/shards/{shard}/inputs/{case}", {"params": {"lease": "x" * 16}}, (401, 403, 403, 403)),
    ("POST", "/api/worker/shards/{shard}/cases/{case}", {"files": {"meta": (None, "{}")}}, (401, 403, 403, 403)),
    ("POST", "/api/worker/shards/{shard}/heartbeat", {"json": {"lease": "x" * 16}}, (401, 403, 403, 403)),
    ("POST", "/api/worker/shards/{shard}/finish", {"json": {"lease": "x" * 16, "outcome": "done"}}, (401, 403, 403, 403)),
    # interactive tracks: one iteration's output (the lease holder's worker token only: tests/execution/
    # test_interactive_routes.py checks another worker and a stale lease; participants and organizers are refused)
    ("POST", "/api/worker/shards/{shard}/cases/{case}/iterations/{iteration}", {"files": {"meta": (None, "{}")}},
     (401, 403, 403, 403)),
    # sign-up and participation (tests/participants): anyone may ask to join or claim; organizers decide
    ("POST", "/api/challenges/cvpr24/signups", _signup, (201, 201, 201, 201)),
    ("POST", "/api/signups/claim", {"json": {"claim_code": "sac_" + "0" * 32}}, (404, 404, 404, 404)),
    ("GET", "/api/challenges/cvpr24/participation", None, (200, 200, 200, 200)),
    ("PATCH", "/api/challenges/cvpr24/participation", {"json": {"max_team_size": 10}}, (401, 403, 403, 200)),
    ("GET", "/api/challenges/cvpr24/terms", None, (200, 200, 200, 200)),
    ("POST", "/api/challenges/cvpr24/terms/accept", None, (401, 200, 200, 200)),
    ("GET", "/api/me/team/join-code", None, (401, 200, 200, 403)),
    ("POST", "/api/me/team/join-code/rotate", None, (401, 200, 200, 403)),
    ("GET", "/api/me/participation", None, (401, 200, 200, 200)),
    ("GET", "/api/admin/signups", None, (401, 403, 403, 200)),
    ("POST", "/api/admin/signups/{signup_1}/approve", None, (401, 403, 403, 200)),
    ("POST", "/api/admin/signups/{signup_2}/refuse", {"json": {"reason": "r"}}, (401, 403, 403, 200)),
    # notifications (tests/notifications): webhooks and deliveries are the organizers', preferences each member's
    ("POST", "/api/admin/challenges/cvpr24/webhooks", {"json": {"url": "https://hooks.example.org/matrix"}},
     (401, 403, 403, 201)),
    ("GET", "/api/admin/challenges/cvpr24/webhooks", None, (401, 403, 403, 200)),
    ("DELETE", "/api/admin/challenges/cvpr24/webhooks/{webhook}", None, (401, 403, 403, 200)),
    ("GET", "/api/admin/challenges/cvpr24/deliveries", None, (401, 403, 403, 200)),
    ("GET", "/api/me/notifications", None, (401, 200, 200, 200)),
    ("PUT", "/api/me/notifications", {"json": {"email_notifications": False}}, (401, 200, 200, 200)),
    # leaderboard, status and the challenge report (tests/leaderboard, tests/reports)
    ("GET", "/api/challenges/cvpr24/tracks/main/leaderboard", None, (200, 200, 200, 200)),
    ("GET", "/api/challenges/cvpr24/tracks/main/leaderboard.csv", None, (200, 200, 200, 200)),
    ("GET", "/api/challenges/cvpr24/prompt-comparison", None, (200, 200, 200, 200)),
    ("GET", "/api/challenges/cvpr24/tracks/main/stability", None, (401, 403, 403, 200)),
    ("GET", "/api/status", None, (200, 200, 200, 200)),
    ("GET", "/api/admin/challenges/cvpr24/tracks/main/report.json", None, (401, 403, 403, 200)),
]


def _our_routes() -> set[tuple[str, str]]:
    """Every route the API mounts (api.routes.include_routes, the one list of routers, and /health): a router
    added there without rows here fails the coverage test."""
    from api.health import router as health
    from api.routes import include_routes

    routers = [("", health)]

    class _Collect:  # records what include_routes mounts (FastAPI's own route list is lazy for included routers)
        def include_router(self, router, prefix: str = "", **_kw) -> None:
            routers.append((prefix, router))

    include_routes(_Collect())  # type: ignore[arg-type]
    out = set()
    for prefix, router in routers:
        for route in router.routes:
            for method in route.methods - {"HEAD"}:
                out.add((method, prefix + route.path))
    return out


def _template(path: str) -> str:
    import re

    return re.sub(r"\{[a-z_0-9]+\}", "{}", path)


def test_matrix_covers_every_route():
    ours = {(m, _template(p)) for m, p in _our_routes()}
    matrix = {(m, _template(p.replace("cvpr24", "{c}").replace("/main", "/{t}"))) for m, p, _, _ in MATRIX}
    assert ours == matrix


@pytest.mark.parametrize("role", ROLES)
def test_authorization_matrix(client, db_settings, role):
    w = seed(db_settings.database_url, quota=20)
    db_settings.max_open_uploads_per_team = 5  # the matrix opens several sessions of team A
    tokens = {"anon": None, "a": w.token_a, "b": w.token_b, "org": w.token_org}
    # team A's objects
    sub_a = submit(client, w.token_a).json()["id"]
    done_a = submit(client, w.token_a).json()["id"]
    finish_run(db_settings.database_url, done_a, state="succeeded", dsc=0.5, nsd=0.5, cases=[{"case_id": "c1"}])
    upload_data = make_image_tar(salt=f"upload-{role}")
    upload_a = client.post("/api/challenges/cvpr24/tracks/main/uploads", json={"total_bytes": len(upload_data)},
                           headers=auth(w.token_a)).json()["upload_id"]
    upload_a2 = client.post("/api/challenges/cvpr24/tracks/main/uploads", json={"total_bytes": 10},
                            headers=auth(w.token_a)).json()["upload_id"]
    with session_scope(db_settings.database_url) as s:  # a second token of alice's, to revoke
        spare = ApiToken(member_id=w.member_a, token_hash=hash_token(new_token()), prefix="sa_spare", label="spare")
        s.add(spare)
        s.flush()
        spare_id = spare.id
    ctx = {"role": role, "team_a": w.team_a, "member_a": w.member_a, "spare_token_a": spare_id, "sub_a": sub_a,
           "done_a": done_a, "upload_a": upload_a, "upload_a2": upload_a2, "upload_data": upload_data,
           "worker_name": "matrix-w", "sha_a": "0" * 64, "shard": 1, "case": "2DBox_CT_0001", "iteration": 0}
    # two sign-up requests (one to approve, one to refuse) and a webhook to delete
    org = auth(w.token_org)
    assert client.patch("/api/challenges/cvpr24/participation", json={"signup_open": True, "terms": "Matrix terms."},
                        headers=org).is_success
    for token in (w.token_a, w.token_b):  # the teams accept the terms (submissions need that); the row re-accepts
        r = client.post("/api/challenges/cvpr24/terms/accept", headers=auth(token))
        assert r.status_code == 200, r.text
    for n in (1, 2):
        r = client.post("/api/challenges/cvpr24/signups",
                        json={"name": f"Setup {n}", "email": f"setup{n}@example.org", "team_name": f"Setup {n}"})
        assert r.status_code == 201, r.text
        ctx[f"signup_{n}"] = r.json()["id"]
    r = client.post("/api/admin/challenges/cvpr24/webhooks", json={"url": "https://hooks.example.org/setup"},
                    headers=org)
    assert r.status_code == 201, r.text
    ctx["webhook"] = r.json()["id"]
    with session_scope(db_settings.database_url) as s:  # a worker identity to revoke
        from api.execution.identity import create_worker

        create_worker(s, db_settings, actor=None, name="matrix-w", queues=["cpu"])
    column = ROLES.index(role)
    problems = []
    for method, path, kwargs, expected in MATRIX:
        kw = kwargs(ctx) if callable(kwargs) else dict(kwargs or {})
        headers = {**kw.pop("headers", {}), **auth(tokens[role])}
        r = client.request(method, path.format(**ctx), headers=headers, **kw)
        if r.status_code != expected[column]:
            problems.append(f"{method} {path}: {r.status_code} (expected {expected[column]}) {r.text[:200]}")
        elif r.status_code >= 400:
            body = r.json()
            if set(body) < {"code", "message"}:
                problems.append(f"{method} {path}: error body {body} lacks code/message")
    assert not problems, "\n".join(problems)
