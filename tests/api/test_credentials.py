"""One credential check (api.auth.tokens.resolve_caller) for the API, the pages and the worker routes."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from api.auth.service import start_web_session
from api.auth.tokens import bearer_token, resolve_caller
from api.db import session_scope
from api.errors import ApiError
from api.models import ApiToken, Member, WebSession, utcnow
from tests.api_helpers import add_member, seed

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def db(settings):
    from api.db import get_engine
    from api.models import Base

    Base.metadata.create_all(get_engine(settings.database_url))
    return settings.database_url


def _status(call) -> tuple[int, str]:
    with pytest.raises(ApiError) as info:
        call()
    return info.value.status, info.value.message


def test_bearer_header_parsing() -> None:
    assert bearer_token(None) is None and bearer_token("") is None
    assert bearer_token("Bearer  sa_x ") == "sa_x" and bearer_token("bearer sa_x") == "sa_x"
    for bad in ("sa_x", "Basic sa_x", "Bearer ", "Token sa_x"):
        assert _status(lambda bad=bad: bearer_token(bad))[0] == 401


def test_tokens_sessions_and_roles(db) -> None:
    w = seed(db)
    with session_scope(db) as s:
        worker, worker_token = add_member(s, name="exec-1", role="worker")
    with session_scope(db) as s:
        caller = resolve_caller(s, token=w.token_a)
        assert caller.member.name == "alice" and caller.token_id is not None and caller.web_session is None
        assert s.get(ApiToken, caller.token_id).last_used_at is not None  # touch records the use
        assert _status(lambda: resolve_caller(s, token="sa_nope"))[0] == 401
        status, message = _status(lambda: resolve_caller(s, token=worker_token))
        assert status == 403 and "/api/worker/" in message  # a worker token reaches worker routes only
        assert resolve_caller(s, token=worker_token, audience="worker").member.name == "exec-1"
        assert _status(lambda: resolve_caller(s, token=w.token_a, audience="worker"))[0] == 403
        assert resolve_caller(s).member is None  # nobody
    with session_scope(db) as s:  # a web session: its member and CSRF token; gone with its token
        ws, sid = start_web_session(session=s, token=w.token_org, hours=1)
        caller = resolve_caller(s, session_id=sid)
        assert caller.member.name == "olga" and caller.web_session.csrf_token == ws.csrf_token
        assert resolve_caller(s, session_id=sid, audience="worker").member is None  # cookies never reach workers
        s.get(ApiToken, ws.token_id).revoked_at = utcnow()
        s.flush()
        assert resolve_caller(s, session_id=sid).member is None  # a stale cookie: the public, not an error
        assert _status(lambda: resolve_caller(s, token=w.token_org))[0] == 401
    with session_scope(db) as s:  # an expired session
        org = s.scalars(select(Member).where(Member.name == "olga")).one()
        _m, token = add_member(s, name="olga2", role="organizer")
        ws, sid = start_web_session(session=s, token=token, hours=1)
        s.get(WebSession, ws.id).expires_at = utcnow() - timedelta(seconds=1)
        s.flush()
        assert resolve_caller(s, session_id=sid).member is None and org is not None


def test_credentials_are_checked_in_one_place() -> None:
    """A second Bearer parser or token lookup (that could disagree on revocation or worker tokens) fails here."""
    pattern = re.compile(r"""["']bearer["']|ApiToken\.token_hash\s*==|WebSession\.session_hash\s*==""")
    offenders = []
    for package in ("api", "leaderboard_web", "segarena"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.relative_to(ROOT).as_posix() in {"api/auth/tokens.py"} or "migrations" in path.parts:
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []
