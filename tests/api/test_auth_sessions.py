"""Organizer-page sign-in is a server-side web session (the cookie is a random id, never the API token),
every state-changing form carries a CSRF token, sign-out is a POST; a token cannot mint tokens that outlive
its revocation; organizers list and revoke a member's tokens (API and CLI). SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

from tests.api_helpers import app, auth, client, db_settings, world  # noqa: F401 (fixtures)
from sqlalchemy import select, update

from api.db import session_scope
from api.deps import hash_token
from api.models import ApiToken, AuditEvent, WebSession, utcnow
from tests.leaderboard_helpers import login_csrf, sign_in


def _signed_in_as(client) -> str | None:
    """The name the page header shows for this browser, or None when it browses as the public."""
    m = re.search(r'<span class="who">([^<]*)', client.get("/").text)
    return m.group(1).strip() if m else None


def _page_csrf(client) -> str:
    m = re.search(r'action="/logout"[^>]*><input type="hidden" name="csrf" value="([^"]+)"', client.get("/").text)
    assert m, "a signed-in page carries the sign-out form with its CSRF token"
    return m.group(1)


def _sessions(url: str) -> list[WebSession]:
    with session_scope(url) as s:
        rows = list(s.scalars(select(WebSession).order_by(WebSession.id)))
        s.expunge_all()
        return rows


def _token_id(url: str, token: str) -> int:
    with session_scope(url) as s:
        return s.scalar(select(ApiToken.id).where(ApiToken.token_hash == hash_token(token)))


# --------------------------------------------------------------------------- web sessions


def test_cookie_is_a_random_session_id_never_the_token(client, world, db_settings):
    r = sign_in(client, world.token_org)
    assert r.status_code == 303, r.text
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("segarena_session="))
    value = cookie.split(";")[0].split("=", 1)[1]
    flags = cookie.lower()
    assert world.token_org not in r.headers.get("set-cookie", "") and world.token_org not in str(client.cookies.items())
    assert "httponly" in flags and "samesite=lax" in flags and "secure" not in flags and "max-age=43200" in flags
    (ws,) = _sessions(db_settings.database_url)
    assert ws.session_hash == hashlib.sha256(value.encode()).hexdigest() and value not in (ws.session_hash, ws.csrf_token)
    assert ws.token_id == _token_id(db_settings.database_url, world.token_org) and ws.revoked_at is None
    lifetime = ws.expires_at.replace(tzinfo=None) - ws.created_at.replace(tzinfo=None)
    assert abs(lifetime - timedelta(hours=12)) < timedelta(seconds=5)
    assert _signed_in_as(client) == "olga"
    # the old scheme (the raw API token in a cookie) signs nobody in any more
    client.cookies.clear()
    client.cookies.set("segarena_token", world.token_org)
    client.cookies.set("segarena_session", world.token_org)
    assert _signed_in_as(client) is None
    # a session id is not an API token either
    assert client.get("/api/me", headers=auth(value)).status_code == 401


def test_sign_in_form_needs_its_csrf_token(client, world, db_settings):
    url = db_settings.database_url
    r = client.post("/login", data={"token": world.token_org}, follow_redirects=False)
    assert r.status_code == 403 and "security token" in r.text and "segarena_session" not in r.headers.get("set-cookie", "")
    good = login_csrf(client)
    r = client.post("/login", data={"token": world.token_org, "csrf": good + "x"}, follow_redirects=False)
    assert r.status_code == 403
    r = client.post("/login", data={"token": world.token_org, "csrf": good}, headers={"Origin": "https://evil.example"},
                    follow_redirects=False)
    assert r.status_code == 403
    # the field without its cookie (a cross-site form cannot set the cookie) is refused too
    client.cookies.clear()
    r = client.post("/login", data={"token": world.token_org, "csrf": good}, follow_redirects=False)
    assert r.status_code == 403
    assert _sessions(url) == [] and _signed_in_as(client) is None
    # same-origin Origin header and the right token: signed in
    r = client.post("/login", data={"token": world.token_org, "csrf": login_csrf(client)},
                    headers={"Origin": "http://testserver"}, follow_redirects=False)
    assert r.status_code == 303 and _signed_in_as(client) == "olga"


def test_logout_is_a_post_with_csrf_and_revokes_the_session(client, world, db_settings):
    url = db_settings.database_url
    assert sign_in(client, world.token_org).status_code == 303
    sid = client.cookies.get("segarena_session")
    csrf = _page_csrf(client)
    # GET /logout only asks (an <img src=/logout> or a link cannot sign anyone out)
    page = client.get("/logout")
    assert page.status_code == 200 and 'action="/logout"' in page.text and csrf in page.text
    assert _signed_in_as(client) == "olga" and _sessions(url)[0].revoked_at is None
    # a POST without, or with a wrong, CSRF token, or from another site: 403 and nothing changes
    for data, headers in (({}, {}), ({"csrf": "wrong"}, {}), ({"csrf": csrf[:-1]}, {}),
                          ({"csrf": csrf}, {"Origin": "https://evil.example"}),
                          ({"csrf": csrf}, {"Origin": "null"}),
                          ({"csrf": csrf}, {"Referer": "https://evil.example/page"})):
        r = client.post("/logout", data=data, headers=headers, follow_redirects=False)
        assert r.status_code == 403, (data, headers)
        assert _signed_in_as(client) == "olga" and _sessions(url)[0].revoked_at is None
    r = client.post("/logout", data={"csrf": csrf}, headers={"Referer": "http://testserver/"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert _sessions(url)[0].revoked_at is not None and _signed_in_as(client) is None
    # the old cookie value is dead server-side, not just forgotten by the browser
    client.cookies.set("segarena_session", sid)
    assert _signed_in_as(client) is None
    with session_scope(url) as s:
        assert [e.action for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))][-2:] == [
            "web_session.start", "web_session.end"]


def test_session_dies_with_its_token_or_its_expiry(client, world, db_settings):
    url = db_settings.database_url
    # a child token (minted by the organizer for itself) signs in; revoking the PARENT ends the session
    child = client.post(f"/api/members/{world.organizer}/tokens", json={"label": "browser"}, headers=auth(world.token_org))
    assert child.status_code == 201 and child.json()["parent_id"] == _token_id(url, world.token_org)
    assert sign_in(client, child.json()["token"]).status_code == 303 and _signed_in_as(client) == "olga"
    assert client.post(f"/api/tokens/{_token_id(url, world.token_org)}/revoke", headers=auth(world.token_org)).status_code == 200
    assert _signed_in_as(client) is None
    assert _sessions(url)[0].revoked_at is not None  # cascaded at revocation time
    # ... and the check at use time holds even if only the token row says so (revoked behind the API's back)
    client.cookies.clear()
    assert sign_in(client, world.token_a).status_code == 303 and _signed_in_as(client) == "alice"
    with session_scope(url) as s:
        s.execute(update(ApiToken).where(ApiToken.id == _token_id(url, world.token_a)).values(revoked_at=utcnow()))
    assert _signed_in_as(client) is None
    # expiry
    client.cookies.clear()
    assert sign_in(client, world.token_b).status_code == 303 and _signed_in_as(client) == "bob"
    with session_scope(url) as s:
        s.execute(update(WebSession).where(WebSession.revoked_at.is_(None)).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert _signed_in_as(client) is None
    # expired sessions do not pile up: the next sign-in deletes them
    assert len(_sessions(url)) == 3
    with session_scope(url) as s:
        s.execute(update(WebSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    client.cookies.clear()
    assert sign_in(client, world.token_b).status_code == 303
    assert len(_sessions(url)) == 1 and _signed_in_as(client) == "bob"


def test_secure_flag_over_https_and_behind_a_trusted_proxy(client, world, db_settings):
    def cookie_flags(**headers) -> str:
        client.cookies.clear()
        r = client.post("/login", data={"token": world.token_org, "csrf": login_csrf(client)}, headers=headers,
                        follow_redirects=False)
        assert r.status_code == 303
        return next(h for h in r.headers.get_list("set-cookie") if h.startswith("segarena_session=")).lower()

    assert "secure" not in cookie_flags()
    # an untrusted client cannot make the server believe it is behind https (nor the opposite)
    assert "secure" not in cookie_flags(**{"X-Forwarded-Proto": "https"})
    db_settings.trust_proxy_headers = True
    assert "secure" in cookie_flags(**{"X-Forwarded-Proto": "https"})
    assert "secure" not in cookie_flags(**{"X-Forwarded-Proto": "http"})
    # a proxy-rewritten host is accepted as same-origin only when trusted
    assert "secure" in cookie_flags(**{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "board.example",
                                       "Origin": "https://board.example"})
    db_settings.trust_proxy_headers = False
    client.cookies.clear()
    r = client.post("/login", data={"token": world.token_org, "csrf": login_csrf(client)},
                    headers={"X-Forwarded-Host": "board.example", "Origin": "https://board.example"}, follow_redirects=False)
    assert r.status_code == 403


def test_secure_flag_when_served_over_https(app, world):
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="https://testserver") as c:
        r = sign_in(c, world.token_org)
        assert r.status_code == 303
        assert "secure" in next(h for h in r.headers.get_list("set-cookie") if h.startswith("segarena_session=")).lower()


# --------------------------------------------------------------------------- token lineage


def test_a_token_cannot_outlive_the_token_that_minted_it(client, world, db_settings):
    url = db_settings.database_url
    a_id = _token_id(url, world.token_a)
    child = client.post(f"/api/members/{world.member_a}/tokens", json={"label": "child"}, headers=auth(world.token_a)).json()
    assert child["parent_id"] == a_id
    grand = client.post(f"/api/members/{world.member_a}/tokens", json={"label": "grand"}, headers=auth(child["token"])).json()
    assert grand["parent_id"] == child["id"]
    # an organizer minting FOR a member: not a child of the organizer's token (documented rule)
    by_org = client.post(f"/api/members/{world.member_a}/tokens", headers=auth(world.token_org)).json()
    assert by_org["parent_id"] is None
    # revoking the root revokes its descendants at once (the participant revokes its own root)
    r = client.post(f"/api/tokens/{a_id}/revoke", headers=auth(grand["token"]))
    assert r.status_code == 200
    for tok in (world.token_a, child["token"], grand["token"]):
        assert client.get("/api/me", headers=auth(tok)).status_code == 401
    assert client.get("/api/me", headers=auth(by_org["token"])).status_code == 200
    with session_scope(url) as s:
        ev = s.scalars(select(AuditEvent).where(AuditEvent.action == "token.revoke")).all()[-1]
        assert ev.target_id == str(a_id) and ev.details["cascaded"] == sorted([child["id"], grand["id"]])
        creates = s.scalars(select(AuditEvent).where(AuditEvent.action == "token.create").order_by(AuditEvent.id)).all()
        assert creates[-1].details["by_token_id"] == _token_id(url, world.token_org)


def test_child_refused_at_auth_when_an_ancestor_is_revoked_without_cascade(client, world, db_settings):
    url = db_settings.database_url
    child = client.post(f"/api/members/{world.member_b}/tokens", headers=auth(world.token_b)).json()
    grand = client.post(f"/api/members/{world.member_b}/tokens", headers=auth(child["token"])).json()
    # revoked in the DB only (a row revoked by an older version, or a mint racing the revocation)
    with session_scope(url) as s:
        s.execute(update(ApiToken).where(ApiToken.id == _token_id(url, world.token_b)).values(revoked_at=utcnow()))
    for tok in (child["token"], grand["token"]):
        r = client.get("/api/me", headers=auth(tok))
        assert r.status_code == 401 and "revoked" in r.json()["message"]
        # the pages use the same check (Bearer on the JSON board and on sign-in)
        assert client.get("/api/challenges/cvpr24/tracks/main/leaderboard", headers=auth(tok)).status_code == 401
        assert sign_in(client, tok).status_code == 401
    # and a revoked-lineage token cannot mint a fresh, unrelated one
    assert client.post(f"/api/members/{world.member_b}/tokens", headers=auth(grand["token"])).status_code == 401


# --------------------------------------------------------------------------- organizers list and revoke


def test_organizer_lists_and_revokes_a_members_tokens(client, world, db_settings):
    url = db_settings.database_url
    child = client.post(f"/api/members/{world.member_a}/tokens", json={"label": "ci"}, headers=auth(world.token_a)).json()
    client.get("/api/me", headers=auth(child["token"]))
    r = client.get(f"/api/admin/members/{world.member_a}/tokens", headers=auth(world.token_org))
    assert r.status_code == 200, r.text
    rows = r.json()
    assert [t["id"] for t in rows] == [_token_id(url, world.token_a), child["id"]]
    assert set(rows[0]) >= {"id", "prefix", "label", "created_at", "last_used_at", "revoked_at", "parent_id"}
    assert rows[1]["parent_id"] == rows[0]["id"] and rows[1]["last_used_at"] and rows[1]["label"] == "ci"
    assert all("token" not in t and "token_hash" not in t for t in rows)
    assert rows[0]["prefix"] == world.token_a[:8] and world.token_a not in r.text
    # revoke: member-scoped route (404 for another member's token), cascades, audited, idempotent
    path = f"/api/admin/members/{world.member_a}/tokens/{rows[0]['id']}/revoke"
    assert client.post(f"/api/admin/members/{world.member_b}/tokens/{rows[0]['id']}/revoke",
                       headers=auth(world.token_org)).status_code == 404
    r = client.post(path, headers=auth(world.token_org))
    assert r.status_code == 200 and r.json()["token"]["revoked_at"] and r.json()["also_revoked"] == [child["id"]]
    assert client.get("/api/me", headers=auth(child["token"])).status_code == 401
    assert client.post(path, headers=auth(world.token_org)).json()["also_revoked"] == []
    listed = client.get(f"/api/admin/members/{world.member_a}/tokens", headers=auth(world.token_org)).json()
    assert all(t["revoked_at"] for t in listed)
    with session_scope(url) as s:
        evs = s.scalars(select(AuditEvent).where(AuditEvent.action == "token.revoke")).all()
        assert len(evs) == 1 and evs[0].actor_member_id == world.organizer and evs[0].details["member_id"] == world.member_a
    assert client.get("/api/admin/members/999999/tokens", headers=auth(world.token_org)).status_code == 404
    assert client.post("/api/admin/tokens/999999/revoke", headers=auth(world.token_org)).status_code == 404


def test_participants_cannot_list_or_revoke_through_the_admin_routes(client, world, db_settings):
    url = db_settings.database_url
    b_id = _token_id(url, world.token_b)
    for method, path in (("get", f"/api/admin/members/{world.member_b}/tokens"),
                         ("get", f"/api/admin/members/{world.member_a}/tokens"),
                         ("post", f"/api/admin/members/{world.member_b}/tokens/{b_id}/revoke"),
                         ("post", f"/api/admin/tokens/{b_id}/revoke")):
        r = getattr(client, method)(path, headers=auth(world.token_a))
        assert r.status_code == 403 and r.json()["code"] == "forbidden", path
        assert getattr(client, method)(path).status_code == 401
    assert client.get("/api/me", headers=auth(world.token_b)).status_code == 200


def test_cli_admin_token_list_and_revoke(settings, tmp_path):
    """``segarena admin token list MEMBER_ID`` / ``revoke TOKEN_ID`` against the real API over HTTP."""
    import httpx

    from tests.api_helpers import shared_app
    from tests.cli_helpers import ThreadServer, run_cli

    org = "sa_cli_tokens_organizer_token"
    settings.bootstrap_organizer_token = org
    with ThreadServer(shared_app(settings, migrate=True)) as srv:
        h = {"Authorization": f"Bearer {org}"}
        team = httpx.post(f"{srv.url}/api/teams", json={"name": "T"}, headers=h).json()
        added = httpx.post(f"{srv.url}/api/teams/{team['id']}/members", json={"name": "tess"}, headers=h).json()
        mid, first = added["member"]["id"], added["token"]
        child = httpx.post(f"{srv.url}/api/members/{mid}/tokens", json={"label": "laptop"},
                           headers={"Authorization": f"Bearer {first}"}).json()
        env = {"SEGARENA_URL": srv.url, "SEGARENA_TOKEN": org, "SEGARENA_CONFIG": str(tmp_path / "none.toml"),
               "SEGARENA_CACHE_DIR": str(tmp_path / "cache")}
        listed = run_cli("admin", "token", "list", str(mid), env=env, check=True).stdout
        lines = [ln.split() for ln in listed.splitlines() if ln.strip() and ln.split()[0].isdigit()]
        assert [ln[0] for ln in lines] == [str(added["token_id"]), str(child["id"])], listed
        assert first not in listed and child["token"] not in listed and "laptop" in listed
        assert lines[1][-1] == str(added["token_id"]) and "active" in lines[0]  # parent column; not revoked
        out = run_cli("admin", "token", "revoke", str(added["token_id"]), env=env, check=True).stdout
        assert f"token {added['token_id']} revoked" in out and f"minted: {child['id']}" in out
        assert httpx.get(f"{srv.url}/api/me", headers={"Authorization": f"Bearer {child['token']}"}).status_code == 401
        assert "active" not in run_cli("admin", "token", "list", str(mid), env=env, check=True).stdout
        # a participant's token is refused by the organizer commands
        denied = run_cli("admin", "token", "list", str(mid), env={**env, "SEGARENA_TOKEN": child["token"]})
        assert denied.returncode != 0
