"""Helpers for the leaderboard tests: an app with the leaderboard router, members with tokens, rows."""

from __future__ import annotations

from datetime import datetime, timedelta, UTC

import numpy as np

from api.db import session_scope
from api.models import Role, Team, Track, TrackKind
from tests import factories

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def make_app(settings):
    """The served app (the API and the leaderboard pages), with this process's leaderboard caches emptied."""
    from api.leaderboard import cache
    from tests.api_helpers import shared_app

    cache.clear()
    return shared_app(settings)


def add_member(url: str, *, role: Role, token: str, team_id: int | None = None, name: str = "") -> None:
    with session_scope(url) as s:
        factories.member(s, team_id=team_id, name=name or role.value, role=role, token=token, email=None)


def make_challenge(session, *, slug: str = "c1", tracks: dict[str, dict] | None = None) -> dict[str, Track]:
    ch = factories.challenge(session, slug=slug)  # demo: tracks default to the public tiny set
    out = {}
    for tslug, given in (tracks or {"main": {}}).items():
        kw = {"kind": TrackKind.main, "case_timeout_s": 60, **given}
        out[tslug] = factories.track(session, challenge=ch, slug=tslug, **kw)
    return out


def make_team(session, name: str) -> Team:
    return factories.team(session, name)


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
