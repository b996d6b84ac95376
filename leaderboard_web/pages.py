"""The public leaderboard's HTML pages (Jinja2, server-rendered); they read through the read model
(``api.leaderboard``), never the models.

Mounted by the composed app (``server.app.create_app``, see :func:`mount`). Pages: ``/`` (challenges),
``/challenges/{challenge}`` (overview), ``/challenges/{challenge}/tracks/{track}`` (leaderboard), ``/submissions/{id}`` (public
fields), ``/admin/runs/{run_id}`` (organizers), ``/status`` (queues), ``/login`` (a server-side web session: the
``segarena_session`` cookie holds a random session id, never the API token; every form carries a CSRF token;
``POST /logout`` ends the session), and ``/assets/{name}``.

The leaderboard page and the public challenge overview are served from the leaderboard's response cache
(``api.leaderboard.cache``): rendered once per board version, with an ``ETag``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from sqlalchemy.orm import Session

from api.auth import service as auth_service
from api.auth.tokens import resolve_caller
from api.errors import ERROR_RESPONSES, ApiError
from api.leaderboard import cache, service
from api.leaderboard.board import Board, cell, csv_header, fmt
from api.leaderboard.viewer import COOKIE, is_organizer, request_credentials, request_session, request_settings
from api.models import Member, Role, Track
from api.params import IdPath, as_utc
from api.submissions import service as submission_service
from leaderboard_web import plots

__all__ = ["router", "COOKIE", "mount"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["pages"])

HERE = Path(__file__).resolve().parent
LOGIN_CSRF_COOKIE = "segarena_login_csrf"  # double-submit token of the sign-in form (there is no session yet)

_env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape(["html"]),
                   trim_blocks=True, lstrip_blocks=True)


def mount(app: FastAPI) -> None:
    """Put the pages in front of ``app``'s routes (the leaderboard page is the hottest path: FastAPI matches
    routes in order)."""
    from leaderboard_web.notifications import router as notifications_router  # organizers: webhooks, delivery log
    from leaderboard_web.participants import router as participants_router  # sign-up, claim, terms, /me, results
    from leaderboard_web.usage import router as usage_router  # organizers: compute per team and track

    n = len(app.router.routes)
    app.include_router(router, responses=ERROR_RESPONSES)
    app.include_router(notifications_router, responses=ERROR_RESPONSES)
    app.include_router(participants_router, responses=ERROR_RESPONSES)
    app.include_router(usage_router, responses=ERROR_RESPONSES)
    added = app.router.routes[n:]
    del app.router.routes[n:]
    app.router.routes[:0] = added


# --------------------------------------------------------------------------- formatting


def _dt(value: Any) -> Markup | str:
    """A date as ``<time datetime="ISO 8601 UTC">YYYY-MM-DD HH:MM UTC</time>``: static/localtime.js shows it in the
    viewer's time zone; the UTC text stays without JavaScript (and as the tooltip)."""
    if value is None or value == "":
        return ""
    if not isinstance(value, datetime):
        try:
            value = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    utc = as_utc(value)
    return Markup('<time datetime="{}">{}</time>').format(utc.isoformat(timespec="seconds").replace("+00:00", "Z"),
                                                          utc.strftime("%Y-%m-%d %H:%M UTC"))


def _bytes(n: Any) -> str:
    if n is None:
        return ""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


_env.filters.update(fmt=fmt, dt=_dt, nbytes=_bytes)
_env.globals.update(cell=cell, csv_header=csv_header)

# --------------------------------------------------------------------------- static assets (preloaded)

_STATIC: dict[str, tuple[bytes, str, str]] = {}
_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}


def _load_static() -> None:
    for p in sorted((HERE / "static").glob("*")):
        if p.is_file() and p.suffix in _TYPES:
            data = p.read_bytes()
            _STATIC[p.name] = (data, _TYPES[p.suffix], hashlib.sha256(data).hexdigest()[:16])


_load_static()
_env.globals["asset"] = lambda name: f"/assets/{name}?v={_STATIC[name][2]}" if name in _STATIC else f"/assets/{name}"


@router.get("/assets/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    if name not in _STATIC:
        raise ApiError(404, "not_found", f"no asset named {name!r}")
    data, media, etag = _STATIC[name]
    return Response(data, media_type=media, headers={"Cache-Control": "public, max-age=86400", "ETag": f'"{etag}"'})


# --------------------------------------------------------------------------- rendering


def _render(template: str, request: Request | None, **ctx: Any) -> str:
    # the signed-in browser's CSRF token (set by _viewer) for the sign-out form; never set while rendering a
    # page shared through a cache (those link to the GET /logout confirmation page instead)
    ctx.setdefault("csrf", getattr(request.state, "csrf", None) if request is not None else None)
    return _env.get_template(template).render(**ctx)


def _page(html: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(html, status_code=status)


def _error_page(request: Request, status: int, title: str, message: str, viewer: Member | None = None) -> HTMLResponse:
    return _page(_render("error.html", request, status=status, title=title, message=message, viewer=viewer), status)


def _organizer_viewer(request: Request, session: Session, refused: str) -> Member | HTMLResponse:
    """The signed-in organizer, else the page that answers instead: the sign-in form (401, coming back here) for the
    public, 403 with ``refused`` for anyone else."""
    viewer = _viewer(request, session)
    if viewer is None:
        return _login_page(request, _safe_next(str(request.url.path)), status=401,
                           message="Organizer pages need you to sign in with an organizer API token.")
    if not is_organizer(viewer):
        return _error_page(request, 403, "Forbidden", refused, viewer)
    return viewer


def _viewer(request: Request, session: Session) -> Member | None:
    """The signed-in member (web session or API token), None for the public (and for bad credentials)."""
    try:
        token, source = request_credentials(request)
        caller = resolve_caller(session, token=token if source == "header" else None,
                                session_id=token if source == "cookie" else None, touch=False)
        if caller.web_session is not None:
            request.state.csrf = caller.web_session.csrf_token
        return caller.member
    except ApiError:
        return None


# --------------------------------------------------------------------------- the leaderboard page


_ORGANIZER_VIEWER = SimpleNamespace(name="Organizer", role=Role.organizer)


def _groups(board: Board) -> list[dict[str, Any]]:
    """Header groups (colspan runs) over the columns: identity, overall, each modality, each size class."""
    names = {"id": "", "overall": "Overall", "booster": "vs main track", "repro": "Reproduction vs original",
             "iterations": "Mean score after each iteration"}
    out: list[dict[str, Any]] = []
    for col in board.columns:
        g = col.modality or col.group
        if col.modality.startswith("size:"):
            label = col.modality[5:] + " structures"
        else:
            label = col.modality or names.get(col.group, "")
        if out and out[-1]["key"] == g:
            out[-1]["span"] += 1
        else:
            out.append({"key": g, "label": label, "span": 1, "modality": col.modality})
    return out


def _page_not_found(request: Request) -> cache.NotFound:
    def not_found(message: str) -> cache.Rendered:
        html = _render("error.html", request, status=404, title="Not found", message=message)
        return cache.Rendered(404, html.encode(), "text/html; charset=utf-8", {})
    return not_found


async def leaderboard_page(request: Request) -> Response:
    """The leaderboard page: the hottest route, so a plain Starlette endpoint (no dependency solving)."""
    challenge, track_slug = request.path_params["challenge"], request.path_params["track"]

    def render(session: Session, track: Track, board: Board) -> cache.Rendered:
        stab = sig = None
        if board.organizer and board.ranked:
            st = service.stability(session, track)
            stab, sig = st["bootstrap"], st["significance"]
        ranked_rows = [row for row in board.rows if not row.excluded]
        html = _render(
            "leaderboard.html", request, board=board, viewer=_ORGANIZER_VIEWER if board.organizer else None,
            tabs=service.track_tabs(session, track, organizer=board.organizer), organizer=board.organizer,
            scatter=plots.scatter_accuracy_runtime(ranked_rows),
            bars=plots.modality_bars(ranked_rows, board.modalities),
            stability=plots.stability_plot(stab) if stab else None,
            significance=plots.significance_plot(sig) if sig else None,
            curves=([plots.iteration_curves(ranked_rows, board.info.iterations, metric=m) for m in ("dsc", "nsd")]
                    if board.info.iterations is not None else None),
            groups=_groups(board),
        )
        return cache.Rendered(200, html.encode(), "text/html; charset=utf-8", {})
    return await cache.board_response(request, "page", challenge, track_slug, render, _page_not_found(request))


router.add_route("/challenges/{challenge}/tracks/{track}", leaderboard_page, methods=["GET"], include_in_schema=False)


# --------------------------------------------------------------------------- other pages


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index_page(request: Request) -> HTMLResponse:
    with request_session(request) as session:
        viewer = _viewer(request, session)
        items = [{"challenge": ch, "tracks": tracks}
                 for ch, tracks in service.visible_challenges(session, organizer=is_organizer(viewer))]
        return _page(_render("index.html", request, items=items, viewer=viewer))


@router.get("/challenges/{challenge}", response_class=HTMLResponse, include_in_schema=False)
async def challenge_page(challenge: str, request: Request) -> Response:
    """The challenge overview. For the public (no token) it is cached like a track page: rendered once per
    version of its tracks' boards, revalidated after ``CACHE_TTL_S`` or at once after
    :func:`api.leaderboard.invalidate`; signed-in viewers get it fresh."""
    try:
        token, _source = request_credentials(request)
    except ApiError:
        token = "malformed"
    if token:
        return await run_in_threadpool(_challenge_page_fresh, challenge, request)

    def render() -> cache.Rendered:
        resp = _challenge_page_fresh(challenge, request)
        return cache.Rendered(resp.status_code, bytes(resp.body), "text/html; charset=utf-8", {})
    key: cache.CacheKey = ("overview", challenge, "", "public", request_settings(request).database_url)
    return await cache.cached_response(request, key, lambda s: service.overview_version(s, challenge), render)


def _challenge_page_fresh(challenge: str, request: Request) -> HTMLResponse:
    with request_session(request) as session:
        viewer = _viewer(request, session)
        ch = service.find_challenge(session, challenge)
        if ch is None:
            return _error_page(request, 404, "Not found", f"no challenge {challenge!r}", viewer)
        cards = service.challenge_cards(session, ch, organizer=is_organizer(viewer))
        return _page(_render("challenge.html", request, challenge=ch, cards=cards, viewer=viewer,
                             comparison=service.prompt_comparison(cards)))


@router.get("/submissions/{submission_id}", response_class=HTMLResponse, include_in_schema=False)
def submission_page(submission_id: IdPath, request: Request) -> HTMLResponse:
    with request_session(request) as session:
        viewer = _viewer(request, session)
        detail = service.submission_detail(session, submission_id, viewer)
        if detail is None:  # missing, or not the viewer's to see: the same 404
            return _error_page(request, 404, "Not found", f"no submission #{submission_id}", viewer)
        # what the viewer may see of it: the track's feedback policy (organizers: everything)
        view = submission_service.submission_public(session, [detail.submission], viewer=viewer)[0]
        if view.feedback != "none":
            detail.modalities = service.submission_modalities(session, detail.latest, detail.track) \
                if detail.latest is not None and detail.scored else []
        return _page(_render("submission.html", request, sub=detail.submission, track=detail.track,
                             challenge=detail.challenge, team=detail.team, latest=detail.latest, runs=detail.runs,
                             mods=detail.modalities, original=detail.original, viewer=viewer,
                             organizer=is_organizer(viewer), view=view))


@router.get("/admin/runs/{run_id}", response_class=HTMLResponse, include_in_schema=False)
def admin_run_page(run_id: IdPath, request: Request) -> Response:
    with request_session(request) as session:
        viewer = _organizer_viewer(request, session, "only organizers may see run details")
        if isinstance(viewer, Response):
            return viewer
        d = service.run_detail(session, run_id)
        if d is None:
            return _error_page(request, 404, "Not found", f"no run #{run_id}", viewer)
        return _page(_render("run.html", request, run=d.run, sub=d.submission, team=d.team, track=d.track,
                             cases=d.cases, counts=d.counts, viewer=viewer, organizer=True, workers=d.workers,
                             siblings=d.siblings))


def _safe_next(nxt: str | None) -> str:
    return nxt if nxt and nxt.startswith("/") and not nxt.startswith("//") and "\\" not in nxt else "/"


# --------------------------------------------------------------------------- sign-in, CSRF, sign-out
#
# Every state-changing form of these pages is a POST carrying a CSRF token in the hidden field ``csrf``:
# the web session's synchronizer token (WebSession.csrf_token) once signed in, a double-submit cookie on
# the sign-in form (there is no session yet). The field is compared in constant time, and a request with
# an Origin (or, lacking it, a Referer) from another site is refused as well. A new form: call
# ``_checked_session(request, session, csrf)`` and answer ``_csrf_refused(request)`` when it returns None.


def _https(request: Request) -> bool:
    """Served over https: directly, or behind a proxy that says so (trusted only with SEGARENA_TRUST_PROXY_HEADERS)."""
    if request.url.scheme == "https":
        return True
    if not request_settings(request).trust_proxy_headers:
        return False
    return request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower() == "https"


def _same_origin(request: Request) -> bool:
    """False when the browser says the form came from another site (Origin, else Referer); absent headers pass."""
    src = request.headers.get("origin") or request.headers.get("referer")
    if not src:
        return True
    if src.strip().lower() == "null":
        return False
    netloc = urlsplit(src).netloc.lower()
    allowed = {request.headers.get("host", "").lower(), urlsplit(request_settings(request).public_base_url).netloc.lower()}
    if request_settings(request).trust_proxy_headers and request.headers.get("x-forwarded-host"):
        allowed.add(request.headers["x-forwarded-host"].split(",")[0].strip().lower())
    return bool(netloc) and netloc in allowed


def _checked_session(request: Request, session: Session, sent: str | None):
    """The signed-in WebSession if this POST passes the CSRF checks, else None."""
    ws = auth_service.web_session(session, request.cookies.get(COOKIE))
    if ws is None or not _same_origin(request) or not auth_service.csrf_matches(ws, sent):
        return None
    return ws


def _csrf_refused(request: Request) -> HTMLResponse:
    return _error_page(request, 403, "Forbidden", "This form's security token is missing, wrong or expired, or the "
                       "form was sent from another site. Reload the page and submit it again.")


def _login_page(request: Request, nxt: str, *, status: int = 200, message: str = "") -> HTMLResponse:
    """The sign-in form, with its double-submit CSRF token (cookie + hidden field)."""
    csrf = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not (20 <= len(csrf) <= 64 and csrf.replace("-", "").replace("_", "").isalnum()):
        csrf = secrets.token_urlsafe(32)
    resp = _page(_render("login.html", request, next=nxt, viewer=None, status=status, message=message,
                         action=f"/login?next={quote(nxt)}", csrf=None, login_csrf=csrf), status)
    resp.set_cookie(LOGIN_CSRF_COOKIE, csrf, httponly=True, samesite="strict", max_age=3600, path="/login",
                    secure=_https(request))
    resp.headers["Cache-Control"] = "no-store"
    return resp


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return _login_page(request, _safe_next(next))


@router.post("/login", include_in_schema=False)
def login_submit(request: Request, token: str = Form(""), csrf: str = Form(""), next: str = "/") -> Response:
    nxt = _safe_next(next)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not (cookie and csrf and hmac.compare_digest(cookie.encode(), csrf.encode())) or not _same_origin(request):
        return _csrf_refused(request)
    settings = request_settings(request)
    with request_session(request) as session:
        started = auth_service.start_web_session(session=session, token=token, hours=settings.web_session_hours) \
            if token.strip() else None
    if started is None:
        return _login_page(request, nxt, status=401,
                           message="That token is unknown or revoked. Paste the API token you were given (it starts with sa_).")
    _, sid = started
    resp = RedirectResponse(nxt, status_code=303)
    resp.set_cookie(COOKIE, sid, httponly=True, samesite="lax", max_age=int(settings.web_session_hours * 3600), path="/",
                    secure=_https(request))
    resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    resp.delete_cookie("segarena_token", path="/")  # the raw-token cookie of older versions
    return resp


@router.get("/logout", response_class=HTMLResponse, include_in_schema=False)
def logout_page(request: Request) -> HTMLResponse:
    """A confirmation page: signing out is a POST with the CSRF token (a link or an image cannot sign you out)."""
    with request_session(request) as session:
        viewer = _viewer(request, session)
        return _page(_render("logout.html", request, viewer=viewer))


@router.post("/logout", include_in_schema=False)
def logout(request: Request, csrf: str = Form("")) -> Response:
    with request_session(request) as session:
        if auth_service.web_session(session, request.cookies.get(COOKIE)) is not None:
            ws = _checked_session(request, session, csrf)
            if ws is None:
                return _csrf_refused(request)
            auth_service.end_web_session(session, ws)
    resp = RedirectResponse("/", status_code=303)
    resp.delete_cookie(COOKIE, path="/")
    resp.delete_cookie("segarena_token", path="/")
    return resp


# --------------------------------------------------------------------------- queue status


@router.get("/status", response_class=HTMLResponse, include_in_schema=False)
def status_page(request: Request) -> HTMLResponse:
    """The declared queues, their workers and waits, and warnings for tracks nobody serves (GET /api/status)."""
    from api.status.service import queue_status

    with request_session(request) as session:
        viewer = _viewer(request, session)
        org = is_organizer(viewer)
        status = queue_status(session, request_settings(request), organizer=org)
        return _page(_render("status.html", request, status=status, organizer=org, viewer=viewer))
