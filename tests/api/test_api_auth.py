"""Teams, members and tokens: tokens are random, shown once, stored only as a hash, and revocable."""

from __future__ import annotations

from tests.api_helpers import app, auth, client, db_settings, world  # noqa: F401 (fixtures)
from sqlalchemy import select

from api.db import session_scope
from api.deps import hash_token
from api.models import ApiToken, AuditEvent


def test_me_needs_a_valid_bearer_token(client, world):
    assert client.get("/api/me").status_code == 401
    r = client.get("/api/me", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and r.json()["code"] == "unauthorized" and "Bearer" in r.json()["message"]
    r = client.get("/api/me", headers=auth("sa_not-a-token"))
    assert r.status_code == 401 and "unknown or revoked" in r.json()["message"]
    me = client.get("/api/me", headers=auth(world.token_a)).json()
    assert me["member"]["name"] == "alice" and me["member"]["role"] == "participant"
    assert me["team"]["name"] == "Team A"
    assert me["token"]["prefix"] == world.token_a[:8]
    org = client.get("/api/me", headers=auth(world.token_org)).json()
    assert org["member"]["role"] == "organizer" and org["team"] is None


def test_organizer_creates_team_member_and_token_shown_once(client, world, db_settings):
    r = client.post("/api/teams", json={"name": "Team C", "affiliation": "C lab"}, headers=auth(world.token_org))
    assert r.status_code == 201, r.text
    team = r.json()
    assert client.post("/api/teams", json={"name": "Team C"}, headers=auth(world.token_org)).status_code == 409
    r = client.post(f"/api/teams/{team['id']}/members", json={"name": "carol", "email": "c@x.org", "role": "participant"},
                    headers=auth(world.token_org))
    assert r.status_code == 201, r.text
    created = r.json()
    token = created["token"]
    assert token.startswith("sa_") and len(token) > 30
    assert client.get("/api/me", headers=auth(token)).json()["team"]["id"] == team["id"]
    with session_scope(db_settings.database_url) as s:
        row = s.scalar(select(ApiToken).where(ApiToken.id == created["token_id"]))
        assert row.token_hash == hash_token(token) and token not in (row.token_hash, row.prefix)
        actions = [e.action for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert actions == ["team.create", "member.create"]
    # the token is never shown again
    assert token not in client.get("/api/me", headers=auth(token)).text
    assert client.post("/api/teams/999999/members", json={"name": "x"}, headers=auth(world.token_org)).status_code == 404
    assert [t["name"] for t in client.get("/api/teams", headers=auth(world.token_org)).json()] == ["Team A", "Team B", "Team C"]


def test_participants_cannot_administer(client, world):
    assert client.post("/api/teams", json={"name": "X"}, headers=auth(world.token_a)).status_code == 403
    r = client.post(f"/api/teams/{world.team_a}/members", json={"name": "m"}, headers=auth(world.token_a))
    assert r.status_code == 403 and r.json() == {"code": "forbidden", "message": "only organizers may do this"}
    assert client.get("/api/teams", headers=auth(world.token_a)).status_code == 403


def test_rotate_and_revoke_tokens(client, world):
    me = client.get("/api/me", headers=auth(world.token_a)).json()
    # a member may rotate its own token ...
    r = client.post(f"/api/members/{world.member_a}/tokens", json={"label": "laptop"}, headers=auth(world.token_a))
    assert r.status_code == 201
    fresh = r.json()
    assert fresh["label"] == "laptop" and client.get("/api/me", headers=auth(fresh["token"])).status_code == 200
    # ... but not another member's (404: ids do not leak)
    assert client.post(f"/api/members/{world.member_b}/tokens", headers=auth(world.token_a)).status_code == 404
    assert client.post(f"/api/tokens/{me['token']['id']}/revoke", headers=auth(world.token_b)).status_code == 404
    # revoke the old one with the new one
    r = client.post(f"/api/tokens/{me['token']['id']}/revoke", headers=auth(fresh["token"]))
    assert r.status_code == 200 and r.json()["revoked_at"]
    r = client.get("/api/me", headers=auth(world.token_a))
    assert r.status_code == 401 and "revoked" in r.json()["message"]
    # organizers may do both for anyone; revoking twice is harmless
    r = client.post(f"/api/members/{world.member_b}/tokens", headers=auth(world.token_org))
    assert r.status_code == 201
    tid = r.json()["id"]
    assert client.post(f"/api/tokens/{tid}/revoke", headers=auth(world.token_org)).status_code == 200
    assert client.post(f"/api/tokens/{tid}/revoke", headers=auth(world.token_org)).status_code == 200
    assert client.get("/api/me", headers=auth(r.json()["token"])).status_code == 401


def test_bad_input_is_a_4xx_json_error(client, world):
    for body in ({}, {"name": ""}, {"name": "x" * 101}, {"name": "ok", "extra": 1}, [1, 2]):
        r = client.post("/api/teams", json=body, headers=auth(world.token_org))
        assert r.status_code == 422, body
        assert set(r.json()) == {"code", "message"}
    r = client.post("/api/teams", content=b"{not json", headers={**auth(world.token_org), "Content-Type": "application/json"})
    assert r.status_code == 422
    r = client.post(f"/api/teams/{world.team_a}/members", json={"name": "m", "role": "admin"}, headers=auth(world.token_org))
    assert r.status_code == 422 and "role" in r.json()["message"]
    assert client.post("/api/members/99999999999999/tokens", headers=auth(world.token_org)).status_code == 422
