"""Start-up tasks: an organizer from ``SEGARENA_BOOTSTRAP_ORGANIZER_TOKEN`` (first install, demo) and a worker
identity from ``SEGARENA_BOOTSTRAP_WORKER_TOKEN`` (embedded execution worker)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from api.auth.tokens import hash_token, token_row
from api.db import session_scope
from api.models import ApiToken, Member, Role
from api.settings import Settings


@contextmanager
def new_token_session(settings: Any, token: str | None) -> Iterator[Session | None]:
    """A database session to install the bootstrap ``token`` in (committed on exit), or None when the token is unset
    or already installed: every start-up runs the bootstrap, each token is installed once."""
    if not token:
        yield None
        return
    with session_scope(settings.database_url) as session:
        yield None if token_row(session, token) is not None else session


def bootstrap(settings: Settings) -> None:
    from api.execution.identity import bootstrap_worker

    bootstrap_worker(settings)  # SEGARENA_BOOTSTRAP_WORKER_TOKEN: the embedded execution worker's identity
    token = settings.bootstrap_organizer_token
    with new_token_session(settings, token) as session:
        if session is None or not token:
            return
        member = Member(name="organizer", role=Role.organizer)
        session.add(member)
        session.flush()
        session.add(ApiToken(member_id=member.id, token_hash=hash_token(token), prefix=token[:8], label="bootstrap"))
