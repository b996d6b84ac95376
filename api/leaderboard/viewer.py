"""Who is asking for a board: an API token (``Authorization: Bearer``) or a web session (the cookie), and the
request's settings and database session. Shared by the JSON/CSV routes and the pages (``leaderboard_web``)."""

from __future__ import annotations

from sqlalchemy.orm import Session
from starlette.requests import Request

from api.auth.tokens import bearer_token, resolve_caller
from api.db import get_sessionmaker
from api.errors import ApiError
from api.models import Member, Role
from api.settings import Settings, get_settings

__all__ = ["COOKIE", "request_settings", "request_session", "request_credentials", "member_of", "is_organizer",
           "require_organizer"]

COOKIE = "segarena_session"  # a random web-session id (api.models.WebSession), never an API token


def request_settings(request: Request) -> Settings:
    """The settings of the app serving ``request`` (those given to create_app), else the process's."""
    return getattr(request.app.state, "settings", None) or get_settings()


def request_session(request: Request) -> Session:
    """A new database session on the app's database (use it as a context manager)."""
    return get_sessionmaker(request_settings(request).database_url)()


def request_credentials(request: Request) -> tuple[str | None, str]:
    """(API token, "header") from ``Authorization: Bearer`` (401 when malformed), or (web-session id, "cookie")."""
    token = bearer_token(request.headers.get("authorization"))
    if token:
        return token, "header"
    cookie = request.cookies.get(COOKIE)
    return (cookie.strip() or None, "cookie") if cookie else (None, "")


def member_of(session: Session, token: str | None, source: str) -> Member | None:
    """The member behind a Bearer token or a web session, by the one credential check
    (:func:`api.auth.tokens.resolve_caller`: 401 for a bad token, nobody for a stale cookie)."""
    if source == "cookie":
        return resolve_caller(session, session_id=token).member
    return resolve_caller(session, token=token, touch=False).member


def is_organizer(member: Member | None) -> bool:
    return member is not None and member.role == Role.organizer


def require_organizer(request: Request, session: Session, refused: str) -> Member:
    """The organizer behind the request's API token or web session; 401 for nobody, 403 (``refused``) for anyone
    else. The JSON routes' gate (the pages answer with a sign-in form instead: ``leaderboard_web.pages``)."""
    token, source = request_credentials(request)
    member = member_of(session, token, source)
    if member is None:
        raise ApiError(401, "unauthorized", "this needs an organizer's API token: send 'Authorization: Bearer <token>'")
    if not is_organizer(member):
        raise ApiError(403, "forbidden", refused)
    return member
