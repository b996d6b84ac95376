"""Helpers for the leaderboard tests: an app with the leaderboard router, members with tokens, rows."""

from __future__ import annotations

from datetime import datetime, timedelta, UTC

import numpy as np

from api.db import session_scope
from api.deps import hash_token
from api.models import ApiToken, Challenge, Member, Role, Team, Track, TrackKind

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def make_app(settings):
    """The served app (the API and the leaderboard pages), with this process's leaderboard caches emptied."""
    from api.leaderboard import cache
    from server.app import create_app

    cache.clear()
    return create_app(settings)


def add_member(url: str, *, role: Role, token: str, team_id: int | None = None, name: str = "") -> None:
    with session_scope(url) as s:
        m = Member(name=name or role.value, role=role, team_id=team_id)
        s.add(m)
        s.flush()
        s.add(ApiToken(member_id=m.id, token_hash=hash_token(token), prefix=token[:8], label="test"))


def make_challenge(session, *, slug: str = "c1", tracks: dict[str, dict] | None = None) -> dict[str, Track]:
    ch = Challenge(slug=slug, title=f"Challenge {slug}", description="test challenge", demo=True)  # tracks default to tiny
    session.add(ch)
    session.flush()
    out = {}
    for tslug, given in (tracks or {"main": {}}).items():
        kw = {"kind": TrackKind.main, "case_timeout_s": 60, **given}
        t = Track(challenge_id=ch.id, slug=tslug, title=tslug.title(), **kw)
        session.add(t)
        session.flush()
        out[tslug] = t
    return out


def make_team(session, name: str) -> Team:
    t = Team(name=name)
    session.add(t)
    session.flush()
    return t


def cases(n: int, mods=("CT", "US")) -> list[tuple[str, str, str]]:
    out = []
    for i in range(n):
        mod = mods[i % len(mods)]
        dim = 3 if mod in ("CT", "MR", "PET") else 2
        out.append((f"{dim}DBox_{mod}_{i:04d}", mod, ("small", "medium", "large")[i % 3]))
    return out


def arr(*xs) -> np.ndarray:
    return np.array(xs, dtype=float)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def login_csrf(client) -> str:
    """GET /login and return the sign-in form's hidden CSRF field (its cookie is now in ``client``)."""
    import re

    page = client.get("/login")
    assert page.status_code == 200, page.text
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def sign_in(client, token: str, *, next: str = "/", **kw):
    """Sign ``client`` in through the sign-in form (as a browser does); returns the POST /login response."""
    return client.post(f"/login?next={next}", data={"token": token, "csrf": login_csrf(client)},
                       follow_redirects=False, **kw)
