"""The one place tests make database rows: ``challenge()``, ``track()``, ``team()``, ``member()``, ``submission()``.

Each takes an open SQLAlchemy session (``with session_scope(url) as s:``), adds the row, flushes (so ids are set)
and returns it; every field has a working default and any column can be given by keyword. The scenario builders
of the feature helpers (tests/api_helpers.seed, tests/worker_helpers.seed_track, ...) are made of these.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["challenge", "track", "team", "member", "submission"]


def challenge(session, *, slug: str = "c1", title: str | None = None, description: str = "test challenge",
              demo: bool = True, **fields: Any):
    """A challenge (``demo`` by default: its tracks may use the public ``tiny`` test set)."""
    from api.models import Challenge

    row = Challenge(slug=slug, title=title or f"Challenge {slug}", description=description, demo=demo, **fields)
    session.add(row)
    session.flush()
    return row


_challenge = challenge  # track()'s parameter of that name shadows the function


def track(session, *, challenge=None, slug: str = "main", title: str | None = None, kind: str = "main",
          **fields: Any):
    """A track of ``challenge`` (a new demo challenge ``ch-<slug>`` if none); ``kind`` by name."""
    from api.models import Track, TrackKind

    parent = challenge if challenge is not None else _challenge(session, slug=f"ch-{slug}")
    row = Track(challenge_id=parent.id, slug=slug, title=title or slug.title(), kind=TrackKind(kind), **fields)
    session.add(row)
    session.flush()
    return row


def team(session, name: str = "Team A", *, reuse: bool = False, **fields: Any):
    """A team; with ``reuse`` the existing team of that name if there is one."""
    from sqlalchemy import select

    from api.models import Team

    if reuse:
        found = session.execute(select(Team).where(Team.name == name)).scalar_one_or_none()
        if found is not None:
            return found
    row = Team(name=name, **fields)
    session.add(row)
    session.flush()
    return row


def member(session, *, team=None, team_id: int | None = None, name: str = "member", role: Any = "participant",
           token: str | None = None, email: str | None = "", label: str = "test") -> tuple[Any, str]:
    """A member (of ``team`` or ``team_id``, or none) with an API token (``token``, or a fresh random one);
    returns (member, token). ``email=""`` gives ``<name>@example.org``; ``None`` leaves it unset."""
    from api.deps import hash_token, new_token
    from api.models import ApiToken, Member, Role

    kw: dict[str, Any] = {} if email is None else {"email": email or f"{name}@example.org"}
    row = Member(name=name, role=Role(role), team_id=team.id if team is not None else team_id, **kw)
    session.add(row)
    session.flush()
    token = token or new_token()
    session.add(ApiToken(member_id=row.id, token_hash=hash_token(token), prefix=token[:8], label=label))
    session.flush()
    return row, token


def submission(session, *, track, team, image_id: str = "sha256:" + "0" * 64, archive: Path | None = None,
               attempt: int = 1, created_at: datetime | None = None, state: str = "queued",
               **fields: Any) -> tuple[Any, Any]:
    """A submission of ``team`` on ``track`` and its run (attempt ``attempt``), both in ``state``; returns
    (submission, run)."""
    from api.models import Run, RunState, Submission, SubmissionState, utcnow

    now = created_at or utcnow()
    size = archive.stat().st_size if archive is not None and archive.exists() else 0
    sub = Submission(track_id=track.id, team_id=team.id, state=SubmissionState(state),
                     archive_path=str(archive or ""), archive_sha256="0" * 64, archive_bytes=size,
                     image_id=image_id, created_at=now, **fields)
    session.add(sub)
    session.flush()
    run = Run(submission_id=sub.id, attempt=attempt, state=RunState(state), queue=track.queue, created_at=now)
    session.add(run)
    session.flush()
    return sub, run
