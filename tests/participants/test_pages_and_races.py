"""The participant pages' guards (sign-in, CSRF, organizers only, another team's submission) without a browser,
the dates markup, and the races: concurrent claims of one code and concurrent approvals into a team's last seat."""

from __future__ import annotations

import re
import threading

import pytest
from sqlalchemy import func, select

from api.db import session_scope
from api.models import ApiToken, Member
from tests.api_helpers import auth, seed, submit


def _signup(client, name, **kw):
    body = {"name": name, "email": f"{name.lower()}@example.org", **kw}
    body.setdefault("team_name", f"Team {name}") if "join_code" not in kw else None
    r = client.post("/api/challenges/cvpr24/signups", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def test_page_guards(client, db_settings):
    w = seed(db_settings.database_url)
    # signed out: /me asks to sign in; its JSON says 401
    r = client.get("/me")
    assert r.status_code == 401 and "sign in" in r.text.lower()
    assert client.get("/me/submissions.json").status_code == 401
    assert client.get("/me/submissions/1.json").status_code == 401
    # the organizers' page: participants get 403, organizers the table
    assert client.get("/admin/challenges/cvpr24/signups", headers=auth(w.token_a)).status_code == 403
    created = _signup(client, "Nia")
    page = client.get("/admin/challenges/cvpr24/signups", headers=auth(w.token_org))
    assert page.status_code == 200 and "nia@example.org" in page.text and f'id="approve-{created["id"]}"' in page.text
    # a decision without the session's CSRF token is refused and changes nothing
    r = client.post(f"/admin/challenges/cvpr24/signups/{created['id']}", data={"decision": "approve"},
                    headers=auth(w.token_org))
    assert r.status_code == 403
    assert client.get("/api/admin/signups", params={"state": "pending"},
                      headers=auth(w.token_org)).json()[0]["id"] == created["id"]
    # the anonymous form needs its double-submit token, and refuses another site's POST
    r = client.post("/challenges/cvpr24/signup", data={"name": "X", "email": "x@example.org", "team_name": "X"})
    assert r.status_code == 403
    client.get("/challenges/cvpr24/signup")
    csrf = client.cookies.get("segarena_form_csrf")
    r = client.post("/challenges/cvpr24/signup", headers={"Origin": "https://evil.example"},
                    data={"csrf": csrf, "name": "X", "email": "x@example.org", "team_name": "X"})
    assert r.status_code == 403
    r = client.post("/challenges/cvpr24/signup", data={"csrf": csrf, "name": "X", "email": "nope", "team_name": "X"})
    assert r.status_code == 422 and "e-mail address like name@example.org" in r.text
    r = client.post("/challenges/cvpr24/signup", data={"csrf": csrf, "name": "X", "email": "x@example.org",
                                                       "team_choice": "new", "team_name": "X Lab"})
    assert r.status_code == 201 and re.search(r'id="claim-code"[^>]*value="sac_', r.text)
    assert r.headers["cache-control"] == "no-store"
    # the claim page with a wrong code says so
    r = client.post("/signup/claim", data={"csrf": csrf, "claim_code": "sac_wrong"})
    assert r.status_code == 404 and "no sign-up request has this claim code" in r.text
    # another team's result page and JSON: the same 404 as a missing submission
    sub_b = submit(client, w.token_b).json()["id"]
    assert client.get(f"/me/submissions/{sub_b}", headers=auth(w.token_a)).status_code == 404
    assert client.get(f"/me/submissions/{sub_b}.json", headers=auth(w.token_a)).status_code == 404
    assert client.get(f"/me/submissions/{sub_b}.json", headers=auth(w.token_b)).json()["state"] == "queued"
    mine = client.get("/me/submissions.json", headers=auth(w.token_b)).json()["submissions"]
    assert [s["id"] for s in mine] == [sub_b] and mine[0]["queue"]["position"] == 1
    # the challenge page offers the sign-up and, to organizers, the requests
    assert 'id="signup-link"' in client.get("/challenges/cvpr24").text
    assert 'id="signups-link"' in client.get("/challenges/cvpr24", headers=auth(w.token_org)).text


def test_dates_are_time_elements_with_utc_fallback():
    from datetime import UTC, datetime

    from leaderboard_web.pages import _dt

    html = str(_dt(datetime(2026, 11, 30, 20, 15, 4, tzinfo=UTC)))
    assert html == '<time datetime="2026-11-30T20:15:04Z">2026-11-30 20:15 UTC</time>'
    assert str(_dt("2026-11-30T21:15:04+01:00")) == '<time datetime="2026-11-30T20:15:04Z">2026-11-30 20:15 UTC</time>'
    assert _dt(None) == "" and _dt("later") == "later"


@pytest.mark.dialects("sqlite", "postgres")  # the dialect matters here: conditional updates, row locks
def test_concurrent_claims_get_one_token(client, db_settings):
    from api.participants import service

    w = seed(db_settings.database_url)
    created = _signup(client, "Ola")
    client.post(f"/api/admin/signups/{created['id']}/approve", headers=auth(w.token_org)).raise_for_status()
    results: list[str] = []
    barrier = threading.Barrier(6)

    def claim() -> None:
        barrier.wait()
        with session_scope(db_settings.database_url) as s:
            try:
                results.append(service.claim(session=s, settings=db_settings, code=created["claim_code"]).token or "")
            except Exception as exc:  # the losers' answer is checked below
                results.append(f"{getattr(exc, 'code', type(exc).__name__)}")

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    tokens = [r for r in results if r.startswith("sa_")]
    assert len(results) == 6 and len(tokens) == 1, results
    assert set(results) - set(tokens) == {"already_claimed"}
    with session_scope(db_settings.database_url) as s:
        member_id = s.scalar(select(Member.id).where(Member.name == "Ola"))
        assert s.scalar(select(func.count()).select_from(ApiToken).where(ApiToken.member_id == member_id)) == 1


@pytest.mark.dialects("sqlite", "postgres")
def test_concurrent_approvals_respect_the_team_size(client, db_settings):
    from api.participants import service
    from api.participants.schemas import ParticipationUpdate

    w = seed(db_settings.database_url)  # team A: alice and anna
    with session_scope(db_settings.database_url) as s:
        org = s.get(Member, w.organizer)
        service.update_participation(session=s, actor=org, challenge="cvpr24",
                                     body=ParticipationUpdate(max_team_size=3))
    code = client.get("/api/me/team/join-code", headers=auth(w.token_a)).json()["join_code"]
    ids = [_signup(client, n, join_code=code)["id"] for n in ("Pat", "Quin", "Ros", "Sol")]
    outcomes: list[str] = []
    barrier = threading.Barrier(len(ids))

    def approve(signup_id: int) -> None:
        barrier.wait()
        with session_scope(db_settings.database_url) as s:
            try:
                service.approve(session=s, settings=db_settings, actor=s.get(Member, w.organizer), signup_id=signup_id)
                outcomes.append("approved")
            except Exception as exc:  # the refusal is checked below
                outcomes.append(getattr(exc, "code", type(exc).__name__))

    threads = [threading.Thread(target=approve, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["approved", "team_full", "team_full", "team_full"], outcomes
    with session_scope(db_settings.database_url) as s:
        assert s.scalar(select(func.count()).select_from(Member).where(Member.team_id == w.team_a)) == 3
