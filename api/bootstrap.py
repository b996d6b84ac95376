"""Start-up tasks: an organizer from ``SEGARENA_BOOTSTRAP_ORGANIZER_TOKEN`` (first install, demo) and a worker
identity from ``SEGARENA_BOOTSTRAP_WORKER_TOKEN`` (embedded execution worker)."""

from __future__ import annotations

from api.auth.tokens import hash_token, token_row
from api.db import session_scope
from api.models import ApiToken, Member, Role
from api.settings import Settings


def bootstrap(settings: Settings) -> None:
    from api.execution.identity import bootstrap_worker

    bootstrap_worker(settings)  # SEGARENA_BOOTSTRAP_WORKER_TOKEN: the embedded execution worker's identity
    token = settings.bootstrap_organizer_token
    if not token:
        return
    with session_scope(settings.database_url) as session:
        if token_row(session, token) is not None:
            return
        member = Member(name="organizer", role=Role.organizer)
        session.add(member)
        session.flush()
        session.add(ApiToken(member_id=member.id, token_hash=hash_token(token), prefix=token[:8], label="bootstrap"))
