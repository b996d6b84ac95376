"""Sign-up through the API: request → approval → one-time claim → token works → terms → submission; refusal;
team-size limit; join codes; anonymous abuse (rate limit, oversized and malformed fields)."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from api.db import session_scope
from api.models import ApiToken, AuditEvent, Member, Signup, Team
from tests.api_helpers import auth, seed, submit

SIGNUPS = "/api/challenges/cvpr24/signups"


def _signup(client, name="Sam", email="sam@example.org", **kw):
    body = {"name": name, "email": email, **kw}
    if "join_code" not in body and "team_name" not in body:
        body["team_name"] = f"Team {name}"
    return client.post(SIGNUPS, json=body)


def _claim(client, code):
    return client.post("/api/signups/claim", json={"claim_code": code})


def test_signup_approval_claim_terms_submission(client, db_settings):
    w = seed(db_settings.database_url)
    r = client.patch("/api/challenges/cvpr24/participation", headers=auth(w.token_org),
                     json={"terms": "No external test data. Publish your method.", "max_team_size": 3})
    assert r.status_code == 200 and r.json()["terms_required"] is True

    r = _signup(client, team_name="Segmenters", affiliation="Some Lab")
    assert r.status_code == 201, r.text
    created = r.json()
    code = created["claim_code"]
    assert code.startswith("sac_") and created["state"] == "pending" and created["team"] == "Segmenters"
    assert created["claim_url"].endswith(f"/signup/claim#code={code}")  # the code travels in the fragment only
    # only the claim code's SHA-256 is stored
    with session_scope(db_settings.database_url) as s:
        row = s.get(Signup, created["id"])
        assert row.claim_hash == hashlib.sha256(code.encode()).hexdigest() and code not in repr(vars(row))

    # before approval: the claim says pending, no token; the organizer sees the request
    r = _claim(client, code)
    assert r.status_code == 200 and r.json()["state"] == "pending" and r.json()["token"] is None
    listed = client.get("/api/admin/signups", params={"state": "pending"}, headers=auth(w.token_org)).json()
    assert [x["id"] for x in listed] == [created["id"]] and listed[0]["email"] == "sam@example.org"
    assert client.get("/api/admin/signups", headers=auth(w.token_a)).status_code == 403
    assert client.get("/api/admin/signups").status_code == 401
    assert client.post(f"/api/admin/signups/{created['id']}/approve", headers=auth(w.token_a)).status_code == 403

    r = client.post(f"/api/admin/signups/{created['id']}/approve", headers=auth(w.token_org))
    assert r.status_code == 200, r.text
    approved = r.json()
    assert approved["state"] == "approved" and approved["member_id"] and "token" not in approved  # no token for the organizer
    assert client.post(f"/api/admin/signups/{created['id']}/approve", headers=auth(w.token_org)).status_code == 409

    # the first claim returns the token, once
    r = _claim(client, code)
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    assert token.startswith("sa_") and r.json()["member_id"] == approved["member_id"]
    again = _claim(client, code)
    assert again.status_code == 410 and again.json()["code"] == "already_claimed"
    assert "shown only once" in again.json()["message"]
    with session_scope(db_settings.database_url) as s:
        tok = s.scalar(select(ApiToken).where(ApiToken.member_id == approved["member_id"]))
        assert tok.token_hash == hashlib.sha256(token.encode()).hexdigest()
        team = s.scalar(select(Team).where(Team.name == "Segmenters"))
        assert team.affiliation == "Some Lab" and team.join_code
        assert {e.action for e in s.scalars(select(AuditEvent))} >= {"signup.create", "signup.approve", "signup.claim"}

    # the token works
    me = client.get("/api/me", headers=auth(token)).json()
    assert me["member"]["name"] == "Sam" and me["team"]["name"] == "Segmenters"

    # terms: refused with a 403 naming how to accept, then accepted, then the submission goes through
    r = submit(client, token)
    assert r.status_code == 403 and r.json()["code"] == "terms_not_accepted"
    assert "segarena accept-terms" in r.json()["message"] and "/challenges/cvpr24/terms" in r.json()["message"]
    r = client.post("/api/challenges/cvpr24/tracks/main/uploads", json={"total_bytes": 100}, headers=auth(token))
    assert r.status_code == 403 and r.json()["code"] == "terms_not_accepted"  # resumable uploads too
    terms = client.get("/api/challenges/cvpr24/terms", headers=auth(token)).json()
    assert terms["required"] and terms["accepted_at"] is None
    r = client.post("/api/challenges/cvpr24/terms/accept", json={"sha256": terms["sha256"]}, headers=auth(token))
    assert r.status_code == 200, r.text
    assert client.get("/api/challenges/cvpr24/terms", headers=auth(token)).json()["accepted_at"]
    r = submit(client, token)
    assert r.status_code == 201, r.text
    assert r.json()["team"] == "Segmenters"

    # the terms change: a new acceptance is needed; accepting stale text is refused
    client.patch("/api/challenges/cvpr24/participation", headers=auth(w.token_org),
                 json={"terms": "No external test data. Publish your method. Share your code."})
    r = submit(client, token)
    assert r.status_code == 403 and "changed since you accepted" in r.json()["message"]
    r = client.post("/api/challenges/cvpr24/terms/accept", json={"sha256": terms["sha256"]}, headers=auth(token))
    assert r.status_code == 409 and r.json()["code"] == "terms_changed"
    assert client.post("/api/challenges/cvpr24/terms/accept", headers=auth(token)).status_code == 200
    assert submit(client, token).status_code == 201
    # organizers submit (baselines) without accepting
    with session_scope(db_settings.database_url) as s:
        s.get(Member, w.organizer).team_id = w.team_b
    assert submit(client, w.token_org).status_code == 201


def test_refusal_reaches_the_requester(client, db_settings):
    w = seed(db_settings.database_url)
    created = _signup(client, name="Rex", email="rex@example.org").json()
    r = client.post(f"/api/admin/signups/{created['id']}/refuse", json={"reason": ""}, headers=auth(w.token_org))
    assert r.status_code == 422
    r = client.post(f"/api/admin/signups/{created['id']}/refuse", json={"reason": "not a registered lab"},
                    headers=auth(w.token_org))
    assert r.status_code == 200 and r.json()["state"] == "refused"
    res = _claim(client, created["claim_code"]).json()
    assert res["state"] == "refused" and res["reason"] == "not a registered lab" and res["token"] is None
    assert client.post(f"/api/admin/signups/{created['id']}/approve", headers=auth(w.token_org)).status_code == 409
    with session_scope(db_settings.database_url) as s:
        assert s.scalar(select(Member).where(Member.name == "Rex")) is None
        assert s.scalar(select(Team).where(Team.name == "Team Rex")) is None
    # the same e-mail may ask again after a refusal (only one pending request per address)
    assert _signup(client, name="Rex", email="rex@example.org", team_name="Rex Lab").status_code == 201
    assert _signup(client, name="Rex", email="REX@example.org", team_name="Rex Lab 2").status_code == 409


def test_join_code_and_team_size_limit(client, db_settings):
    w = seed(db_settings.database_url)  # team A has two members (alice, anna)
    client.patch("/api/challenges/cvpr24/participation", json={"max_team_size": 3}, headers=auth(w.token_org))
    jc = client.get("/api/me/team/join-code", headers=auth(w.token_a))
    assert jc.status_code == 200 and jc.json()["team"] == "Team A" and jc.json()["members"] == 2
    code = jc.json()["join_code"]
    assert client.get("/api/me/team/join-code", headers=auth(w.token_a2)).json()["join_code"] == code  # same team
    assert client.get("/api/me/team/join-code").status_code == 401

    # two newcomers ask to join team A: the limit (3) lets the first in, the second is refused at approval
    first = _signup(client, name="Carl", email="carl@example.org", join_code=code).json()
    second = _signup(client, name="Dora", email="dora@example.org", join_code=code).json()
    assert first["team"] == "Team A"
    assert client.post(f"/api/admin/signups/{first['id']}/approve", headers=auth(w.token_org)).status_code == 200
    r = client.post(f"/api/admin/signups/{second['id']}/approve", headers=auth(w.token_org))
    assert r.status_code == 409 and r.json()["code"] == "team_full"
    assert "at most 3 per team (max_team_size)" in r.json()["message"] and r.json()["members"] == 3
    # a request to join a full team is refused at once
    r = _signup(client, name="Eve", email="eve@example.org", join_code=code)
    assert r.status_code == 409 and r.json()["code"] == "team_full"
    # carl is in team A and sees the same code
    carl = _claim(client, first["claim_code"]).json()["token"]
    assert client.get("/api/me", headers=auth(carl)).json()["team"]["name"] == "Team A"
    # rotating: the old code stops working
    new = client.post("/api/me/team/join-code/rotate", headers=auth(carl)).json()["join_code"]
    assert new != code
    client.patch("/api/challenges/cvpr24/participation", json={"max_team_size": None}, headers=auth(w.token_org))
    r = _signup(client, name="Fay", email="fay@example.org", join_code=code)
    assert r.status_code == 422 and "no team has this join code" in r.json()["message"]
    assert _signup(client, name="Fay", email="fay@example.org", join_code=new).status_code == 201
    # team B cannot read team A's code; an organizer without a team has none
    assert client.get("/api/me/team/join-code", headers=auth(w.token_b)).json()["team"] == "Team B"
    assert client.get("/api/me/team/join-code", headers=auth(w.token_org)).status_code == 403


def test_team_names_and_closed_signup(client, db_settings):
    w = seed(db_settings.database_url)
    r = _signup(client, name="Gil", email="gil@example.org", team_name="team a")  # case-insensitive clash
    assert r.status_code == 409 and "join code" in r.json()["message"]
    assert _signup(client, name="Hal", email="hal@example.org", team_name="Hal Lab").status_code == 201
    r = _signup(client, name="Ivy", email="ivy@example.org", team_name="HAL LAB")  # a pending request holds it
    assert r.status_code == 409
    client.patch("/api/challenges/cvpr24/participation", json={"signup_open": False}, headers=auth(w.token_org))
    r = _signup(client, name="Jo", email="jo@example.org")
    assert r.status_code == 403 and r.json()["code"] == "signup_closed"
    assert client.post("/api/challenges/nope/signups", json={"name": "x", "email": "x@y.org",
                                                              "team_name": "t"}).status_code == 404


@pytest.mark.parametrize("body, field, says", [
    ({"name": "N" * 101, "email": "a@b.org", "team_name": "T"}, "name", "at most 100 characters"),
    ({"name": "N", "email": "a@b.org" + "x" * 200, "team_name": "T"}, "email", "at most 200 characters"),
    ({"name": "N", "email": "not-an-address", "team_name": "T"}, "email", "e-mail address like name@example.org"),
    ({"name": "N", "email": "a@b.org", "team_name": "T" * 101}, "team_name", "at most 100 characters"),
    ({"name": "N", "email": "a@b.org", "affiliation": "A" * 201, "team_name": "T"}, "affiliation",
     "at most 200 characters"),
    ({"name": "N", "email": "a@b.org", "join_code": "J" * 33}, "join_code", "at most 32 characters"),
    ({"name": "N", "email": "a@b.org"}, "", "either team_name"),
    ({"name": "N", "email": "a@b.org", "team_name": "T", "join_code": "abcdefgh"}, "", "not both"),
    ({"name": "N\x1b[2J", "email": "a@b.org", "team_name": "T"}, "name", "control characters"),
    ({"name": "N", "email": "a@b.org", "team_name": "T", "role": "organizer"}, "role", "Extra inputs"),
    ({"name": "N", "email": "a@b.org", "join_code": "bad code!"}, "", "join code is 8 to 32"),
])
def test_bad_fields_are_422_naming_the_field(client, db_settings, body, field, says):
    seed(db_settings.database_url)
    r = client.post(SIGNUPS, json=body)
    assert r.status_code == 422, r.text
    msg = r.json()["message"]
    assert says in msg and (not field or f"{field}:" in msg), msg
    with session_scope(db_settings.database_url) as s:
        assert s.scalar(select(Signup.id)) is None


def test_anonymous_abuse_is_rate_limited(client, db_settings):
    seed(db_settings.database_url)
    db_settings.signup_per_hour = 3
    for i in range(3):
        assert _signup(client, name=f"Bot{i}", email=f"bot{i}@example.org").status_code == 201
    r = _signup(client, name="Bot3", email="bot3@example.org")
    assert r.status_code == 429 and r.json()["code"] == "rate_limited"
    assert "at most 3 per hour" in r.json()["message"] and r.json()["retry_at"]
    # another address is not affected (behind a trusted proxy: the address the proxy appended)
    db_settings.trust_proxy_headers = True
    r = client.post(SIGNUPS, json={"name": "Real", "email": "real@example.org", "team_name": "Real Team"},
                    headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.7"})
    assert r.status_code == 201
    with session_scope(db_settings.database_url) as s:
        assert s.scalar(select(Signup.client).where(Signup.name == "Real")) == "198.51.100.7"
    # a body over the API's limit is refused before parsing (413), like every anonymous route
    db_settings.max_body_bytes = 4096
    from tests.api_helpers import shared_app
    from fastapi.testclient import TestClient

    with TestClient(shared_app(db_settings, migrate=True), raise_server_exceptions=False) as small:
        r = small.post(SIGNUPS, content=b'{"name": "' + b"x" * 10000 + b'"}', headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["code"] == "too_large"
        # claim look-ups are limited per address too
        for _ in range(120):
            small.post("/api/signups/claim", json={"claim_code": "sac_nothing"})
        r = small.post("/api/signups/claim", json={"claim_code": "sac_nothing"})
        assert r.status_code == 429 and r.json()["code"] == "rate_limited"
    # pending requests per challenge are bounded
    db_settings.trust_proxy_headers = False
    db_settings.signup_per_hour = 100
    db_settings.signup_max_pending = 4  # 3 bots and Real wait
    r = client.post(SIGNUPS, json={"name": "Late", "email": "late@example.org", "team_name": "Late Team"},
                    headers={"X-Forwarded-For": "192.0.2.1"})
    assert r.status_code == 429 and "waiting for the organizers' decision" in r.json()["message"]


def test_claim_expiry_and_unknown_codes(client, db_settings):
    w = seed(db_settings.database_url)
    r = _claim(client, "sac_" + "x" * 43)
    assert r.status_code == 404 and "no sign-up request has this claim code" in r.json()["message"]
    created = _signup(client, name="Kim", email="kim@example.org").json()
    db_settings.signup_claim_days = 1
    approved = client.post(f"/api/admin/signups/{created['id']}/approve", headers=auth(w.token_org)).json()
    from datetime import timedelta

    from api.models import utcnow

    with session_scope(db_settings.database_url) as s:
        s.get(Signup, created["id"]).claim_expires_at = utcnow() - timedelta(seconds=1)
    r = _claim(client, created["claim_code"])
    assert r.status_code == 410 and r.json()["code"] == "claim_expired"
    assert f"segarena admin token new {approved['member_id']}" in r.json()["message"]
    with session_scope(db_settings.database_url) as s:
        assert s.scalar(select(ApiToken).where(ApiToken.member_id == approved["member_id"])) is None


def test_quota_left_and_next_slot(client, db_settings):
    w = seed(db_settings.database_url, quota=2)
    first = submit(client, w.token_a)
    assert first.status_code == 201
    me = client.get("/api/me/participation", params={"challenge": "cvpr24"}, headers=auth(w.token_a)).json()
    main = next(q for q in me["quotas"] if q["track"] == "main")
    assert (main["quota_per_day"], main["used"], main["left"]) == (2, 1, 1)
    from datetime import datetime, timedelta

    created = datetime.fromisoformat(first.json()["created_at"])
    assert datetime.fromisoformat(main["next_slot_at"]) == created + timedelta(days=1)
    assert all(q["track"] != "main" or q["is_open"] for q in me["quotas"])
    other = next(q for q in me["quotas"] if q["track"] == "booster")
    assert (other["used"], other["left"], other["next_slot_at"]) == (0, 2, None)
    # team B's view counts team B only
    b = client.get("/api/me/participation", headers=auth(w.token_b)).json()
    assert next(q for q in b["quotas"] if q["track"] == "main")["used"] == 0
