"""Public leaderboard pages (Jinja2, server-rendered) and the leaderboard JSON/CSV API.

Mounted by the API app (``app.include_router(leaderboard_web.routes.router)``). Routes:

* JSON ``GET /api/challenges/{c}/tracks/{t}/leaderboard`` — every column the page shows, plus the
  scheme, metric profile and frozen/hidden flags; ``…/leaderboard.csv`` — exactly the page's columns;
  ``…/stability`` — organizers: bootstrap ranking stability and the significance map.
* Pages: ``/`` (challenges), ``/challenges/{c}`` (overview), ``/challenges/{c}/tracks/{t}``
  (leaderboard), ``/submissions/{id}`` (public fields), ``/admin/runs/{run_id}`` (organizers),
  ``/login`` (a server-side web session: the ``segarena_session`` cookie holds a random session id,
  never the API token; every form carries a CSRF token; ``POST /logout`` ends the session).

Speed: leaderboard responses (page, JSON, CSV) are rendered once per board version and served
from an in-process cache as bytes with an ``ETag`` (``If-None-Match`` → 304). A cached entry is
trusted for ``CACHE_TTL_S`` seconds, then revalidated with :func:`api.leaderboard.board_version`
(a few cheap aggregate queries) and rebuilt only when the data changed;
:func:`api.leaderboard.invalidate` makes the next request revalidate at once.
"""

from __future__ import annotations

import csv
import gc
import gzip
import hashlib
import hmac
import io
import math
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api import leaderboard as lb
from api.csvsafe import csv_safe
from api.db import get_sessionmaker
from api.auth import service as auth_service
from api.deps import authenticate_token, refuse_worker
from api.errors import ApiError
from api.models import (
    CaseResult,
    CaseStatus,
    Challenge,
    Member,
    Role,
    Run,
    Submission,
    SubmissionState,
    Team,
    Track,
    Visibility,
)
from api.params import IdPath
from api.settings import get_settings
from api.submissions import service as submission_service
from leaderboard_web import plots

__all__ = ["router", "CACHE_TTL_S", "clear_cache", "COOKIE", "is_mounted", "mount"]

router = APIRouter(tags=["leaderboard"])

HERE = Path(__file__).resolve().parent
COOKIE = "segarena_session"  # a random web-session id (api.models.WebSession), never an API token
LOGIN_CSRF_COOKIE = "segarena_login_csrf"  # double-submit token of the sign-in form (there is no session yet)
CACHE_TTL_S = 1.0

_env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape(["html"]),
                   trim_blocks=True, lstrip_blocks=True)


def is_mounted(app) -> bool:
    """True when ``router`` is already part of ``app`` (FastAPI keeps included routers as nodes or copies routes)."""
    for r in app.router.routes:
        if getattr(r, "original_router", None) is router or getattr(r, "endpoint", None) is leaderboard_page:
            return True
    return False


def mount(app) -> None:
    """Include ``router`` in ``app`` unless it is already there."""
    if not is_mounted(app):
        from api.errors import ERROR_RESPONSES

        app.include_router(router, responses=ERROR_RESPONSES)


# --------------------------------------------------------------------------- formatting


def fmt(value: Any, kind: str = "text") -> str:
    """A cell's text, identical on the page and in the CSV."""
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return ""
    if kind == "score":
        return f"{value:.3f}"
    if kind == "runtime":
        return f"{value:.2f}"
    if kind == "delta":
        return f"{value:+.3f}"
    if kind == "ratio":
        return f"{value:.2f}"
    if kind == "int":
        return str(int(value))
    return str(value)


def _dt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        v = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return v.strftime("%Y-%m-%d %H:%M UTC")
    return str(value).replace("T", " ").replace("Z", " UTC")


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


def csv_header(col: dict) -> str:
    """The CSV header of a column: its group (modality or size class) and label."""
    mod = col.get("modality") or ""
    if mod.startswith("size:"):
        return f"{mod[5:]} {col['label']}"
    return f"{mod} {col['label']}" if mod else col["label"]


def _cell(row: dict, col: dict) -> str:
    return fmt(row.get(col["key"]), col["type"])


_env.globals.update(cell=_cell, csv_header=csv_header)

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


# --------------------------------------------------------------------------- who is asking


def _settings(request: Request):
    return getattr(request.app.state, "settings", None) or get_settings()


def _session(request: Request) -> Session:
    return get_sessionmaker(_settings(request).database_url)()


def _credentials(request: Request) -> tuple[str | None, str]:
    """(API token, "header") from ``Authorization: Bearer``, or (web-session id, "cookie") from the cookie."""
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "send your API token as 'Authorization: Bearer <token>'")
        return token.strip(), "header"
    cookie = request.cookies.get(COOKIE)
    return (cookie.strip() or None, "cookie") if cookie else (None, "")


def _member(session: Session, token: str | None, source: str) -> Member | None:
    """The member behind a Bearer token (the API's own check: api.deps.authenticate_token) or a web session."""
    if not token:
        return None
    if source == "cookie":
        ws = auth_service.web_session(session, token)
        return session.get(Member, ws.member_id) if ws is not None else None  # a stale cookie: browse as the public
    row = authenticate_token(session, token, touch=False)
    if row is None:
        raise ApiError(401, "unauthorized", "this API token is unknown or revoked; ask your team or the organizers for a new one")
    refuse_worker(row.member)
    return row.member


def _is_organizer(m: Member | None) -> bool:
    return m is not None and m.role == Role.organizer


# --------------------------------------------------------------------------- the board cache


@dataclass
class _Entry:
    version: tuple
    gen: int
    checked: float
    status: int
    body: bytes
    media: str
    etag: str
    headers: dict[str, str]
    gzipped: bytes | None = None  # compressed once, when the entry is built
    revalidating: bool = False


class _LRU:
    """A thread-safe mapping that keeps at most ``limit`` entries (the ``limit`` of the latest ``put``),
    evicting the least recently used: keys come from request paths, so the cache must stay bounded."""

    def __init__(self) -> None:
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._d.get(key)
            if value is not None:
                self._d.move_to_end(key)
            return value

    def put(self, key, value, limit: int) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > max(1, limit):
                self._d.popitem(last=False)

    def pop(self, key) -> None:
        with self._lock:
            self._d.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()

    def __len__(self) -> int:
        return len(self._d)


_cache = _LRU()  # rendered responses; a 404 is never kept (its key is whatever the client typed)
_boards = _LRU()  # one built board serves the page, JSON and CSV
_cache_lock = threading.Lock()
_frozen = False


def clear_cache() -> None:
    """Drop every cached board of this process."""
    with _cache_lock:
        _cache.clear()
        _boards.clear()


def _respond(request: Request, e: _Entry) -> Response:
    headers = {"ETag": e.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding", **e.headers}
    if e.status == 200 and request.headers.get("if-none-match") == e.etag:
        return Response(status_code=304, headers=headers)
    if e.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(e.gzipped, status_code=e.status, media_type=e.media, headers=headers)
    return Response(e.body, status_code=e.status, media_type=e.media, headers=headers)


def _build_entry(request: Request, key: tuple, c: str, t: str, organizer: bool, render) -> _Entry:
    """Revalidate (or build) the cache entry ``key`` — runs in a worker thread."""
    gen = lb.generation()
    with _session(request) as session:
        track = lb.find_track(session, c, t)
        version = ("missing",) if track is None else lb.board_version(session, track)
        old = _cache.get(key)
        if old is not None and old.version == version:
            old.checked, old.gen = time.monotonic(), gen
            return old
        if track is None:
            status, body, media, headers = _not_found(request, key[0], f"no track {t!r} in challenge {c!r}")
        elif track.visibility == Visibility.hidden and not organizer:
            status, body, media, headers = _not_found(request, key[0], f"no track {t!r} in challenge {c!r}")
        else:
            bkey = (key[1], key[2], key[3], key[4])
            cached = _boards.get(bkey)
            if cached is not None and cached[0] == version:
                board = cached[1]
            else:
                board = lb.build_board(session, track, organizer=organizer)
                _boards.put(bkey, (version, board), _settings(request).leaderboard_cache_entries)
            status, body, media, headers = render(session, track, board)
    entry = _Entry(version, gen, time.monotonic(), status, body, media,
                   '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"', headers,
                   gzip.compress(body, compresslevel=6, mtime=0) if len(body) > 1024 else None)
    if status == 404:
        _cache.pop(key)  # never cache a miss (unbounded keys); drop what this key served before
    else:
        _cache.put(key, entry, _settings(request).leaderboard_cache_entries)
    global _frozen
    if not _frozen:
        # once per process, after the first build: move the (long-lived) modules, app and first board
        # out of the cyclic GC's scans, so full collections under load stay short
        _frozen = True
        gc.collect()
        gc.freeze()
    return entry


def _not_found(request: Request, kind: str, message: str) -> tuple[int, bytes, str, dict]:
    if kind == "page":
        return 404, _render("error.html", request, status=404, title="Not found", message=message).encode(), \
            "text/html; charset=utf-8", {}
    return 404, lb.to_json_bytes({"code": "not_found", "message": message}), "application/json", {}


async def _board_response(request: Request, kind: str, c: str, t: str, render) -> Response:
    token, source = _credentials(request)
    organizer = False
    if token:
        def _who() -> bool:
            with _session(request) as s:
                return _is_organizer(_member(s, token, source))
        organizer = await run_in_threadpool(_who)
    key = (kind, c, t, "organizer" if organizer else "public", _settings(request).database_url)
    e = _cache.get(key)
    if e is None or e.gen != lb.generation():
        e = await run_in_threadpool(_build_entry, request, key, c, t, organizer, render)
    elif time.monotonic() - e.checked > CACHE_TTL_S and not e.revalidating:
        # one request revalidates; concurrent ones keep getting the entry meanwhile (no thundering herd)
        stale = e
        stale.revalidating = True
        try:
            e = await run_in_threadpool(_build_entry, request, key, c, t, organizer, render)
        finally:
            stale.revalidating = False
    return _respond(request, e)


# --------------------------------------------------------------------------- JSON / CSV


def _json_board(board: dict) -> dict:
    return board


@router.get("/api/challenges/{c}/tracks/{t}/leaderboard", summary="Leaderboard of a track (JSON)")
async def leaderboard_json(c: str, t: str, request: Request) -> Response:
    """Every column and row of the track's leaderboard page, plus scheme, profile and flags."""
    def render(_s, _track, board):
        return 200, lb.to_json_bytes(_json_board(board)), "application/json", {}
    return await _board_response(request, "json", c, t, render)


def board_csv(board: dict) -> bytes:
    """The page's table as CSV: the same columns in the same order, the same cell text."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)  # a bare CR is not quoted otherwise
    cols = board["columns"]
    w.writerow([csv_safe(csv_header(col)) for col in cols])
    for r in board["rows"]:
        cells = [csv_safe(_cell(r, col)) for col in cols]
        (quoted if any("\r" in c for c in cells) else w).writerow(cells)
    return buf.getvalue().encode("utf-8")


@router.get("/api/challenges/{c}/tracks/{t}/leaderboard.csv", summary="Leaderboard of a track (CSV)",
            response_class=Response,
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                             "description": "The page's table as CSV, every column"}})
async def leaderboard_csv(c: str, t: str, request: Request) -> Response:
    """The leaderboard table exactly as the page shows it, as CSV."""
    def render(_s, track, board):
        name = f"{board['challenge']}-{board['track']}-leaderboard.csv"
        return 200, board_csv(board), "text/csv; charset=utf-8", {"Content-Disposition": f'attachment; filename="{name}"'}
    return await _board_response(request, "csv", c, t, render)


@router.get("/api/challenges/{c}/tracks/{t}/stability", summary="Ranking stability (organizers)")
def stability_json(c: str, t: str, request: Request, n_boot: int = 1000, metric: str = "dsc", alpha: float = 0.05) -> Response:
    """Bootstrap ranking stability (Kendall's τ) and the Holm-corrected Wilcoxon significance map."""
    if not 10 <= n_boot <= 10000:
        raise ApiError(422, "invalid_request", "n_boot must be between 10 and 10000")
    if not 0 < alpha < 1:
        raise ApiError(422, "invalid_request", "alpha must be between 0 and 1")
    token, source = _credentials(request)
    with _session(request) as session:
        member = _member(session, token, source)
        if member is None:
            raise ApiError(401, "unauthorized", "this needs an organizer's API token: send 'Authorization: Bearer <token>'")
        if not _is_organizer(member):
            raise ApiError(403, "forbidden", "only organizers may see ranking stability")
        track = lb.find_track(session, c, t)
        if track is None:
            raise ApiError(404, "not_found", f"no track {t!r} in challenge {c!r}")
        try:
            out = lb.stability(session, track, n_boot=n_boot, metric=metric, alpha=alpha)
        except ValueError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
    return Response(lb.to_json_bytes(out), media_type="application/json")


# --------------------------------------------------------------------------- pages


def _render(template: str, request: Request | None, **ctx: Any) -> str:
    # the signed-in browser's CSRF token (set by _viewer) for the sign-out form; never set while rendering a
    # page shared through a cache (those link to the GET /logout confirmation page instead)
    ctx.setdefault("csrf", getattr(request.state, "csrf", None) if request is not None else None)
    return _env.get_template(template).render(**ctx)


def _page(html: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(html, status_code=status)


def _error_page(request: Request, status: int, title: str, message: str, viewer: Member | None = None) -> HTMLResponse:
    return _page(_render("error.html", request, status=status, title=title, message=message, viewer=viewer), status)


async def leaderboard_page(request: Request) -> Response:
    """The leaderboard page: the hottest route, so a plain Starlette endpoint (no dependency solving)."""
    c, t = request.path_params["c"], request.path_params["t"]

    def render(session, track, board):
        stab = sig = None
        if board["audience"] == "organizer" and board.get("ranked"):
            st = lb.stability(session, track)
            stab, sig = st["bootstrap"], st["significance"]
        others = session.execute(select(Track.slug, Track.title, Track.visibility).where(
            Track.challenge_id == track.challenge_id).order_by(Track.id)).all()
        tabs = [(s, ti) for s, ti, v in others if v != Visibility.hidden or board["audience"] == "organizer"]
        ranked_rows = [r for r in board["rows"] if not r["excluded"]]
        html = _render(
            "leaderboard.html", request, board=board, viewer=_ORGANIZER_VIEWER if board["audience"] == "organizer" else None, tabs=tabs, organizer=board["audience"] == "organizer",
            scatter=plots.scatter_accuracy_runtime(ranked_rows),
            bars=plots.modality_bars(ranked_rows, board["modalities"]),
            stability=plots.stability_plot(stab) if stab else None,
            significance=plots.significance_plot(sig) if sig else None,
            groups=_groups(board),
        )
        return 200, html.encode(), "text/html; charset=utf-8", {}
    return await _board_response(request, "page", c, t, render)


router.add_route("/challenges/{c}/tracks/{t}", leaderboard_page, methods=["GET"], include_in_schema=False)

_ORGANIZER_VIEWER = SimpleNamespace(name="Organizer", role=Role.organizer)


def _groups(board: dict) -> list[dict]:
    """Header groups (colspan runs) over the columns: identity, overall, each modality, each size class."""
    names = {"id": "", "overall": "Overall", "booster": "vs main track", "repro": "Reproduction vs original"}
    out: list[dict] = []
    for col in board["columns"]:
        g = col["modality"] or col["group"]
        label = col["modality"][5:] + " structures" if col["modality"].startswith("size:") else (col["modality"] or names.get(col["group"], ""))
        if out and out[-1]["key"] == g:
            out[-1]["span"] += 1
        else:
            out.append({"key": g, "label": label, "span": 1, "modality": col["modality"]})
    return out


def _viewer(request: Request, session: Session) -> Member | None:
    try:
        token, source = _credentials(request)
        if source == "cookie":
            ws = auth_service.web_session(session, token)
            if ws is None:
                return None
            request.state.csrf = ws.csrf_token
            return session.get(Member, ws.member_id)
        return _member(session, token, source)
    except ApiError:
        return None


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index_page(request: Request) -> HTMLResponse:
    with _session(request) as session:
        viewer = _viewer(request, session)
        org = _is_organizer(viewer)
        challenges = session.scalars(select(Challenge).order_by(Challenge.id)).all()
        items = []
        for ch in challenges:
            tracks = [tr for tr in ch.tracks if org or tr.visibility != Visibility.hidden]
            if tracks or org:
                items.append({"challenge": ch, "tracks": tracks})
        return _page(_render("index.html", request, items=items, viewer=viewer))


@router.get("/challenges/{c}", response_class=HTMLResponse, include_in_schema=False)
async def challenge_page(c: str, request: Request) -> Response:
    """The challenge overview. For the public (no token) it is cached like a track page: rendered once per
    version of its tracks' boards (:func:`api.leaderboard.board_version` of each), revalidated after
    ``CACHE_TTL_S`` or at once after :func:`api.leaderboard.invalidate`; signed-in viewers get it fresh."""
    try:
        token, _source = _credentials(request)
    except ApiError:
        token = "malformed"
    if token:
        return await run_in_threadpool(_challenge_page_fresh, c, request)
    key = ("overview", c, "", "public", _settings(request).database_url)
    e = _cache.get(key)
    if e is None or e.gen != lb.generation():
        e = await run_in_threadpool(_build_overview_entry, request, key, c)
    elif time.monotonic() - e.checked > CACHE_TTL_S and not e.revalidating:
        stale = e
        stale.revalidating = True
        try:
            e = await run_in_threadpool(_build_overview_entry, request, key, c)
        finally:
            stale.revalidating = False
    return _respond(request, e)


def _build_overview_entry(request: Request, key: tuple, c: str) -> _Entry:
    """Revalidate (or build) the public overview of challenge ``c`` — runs in a worker thread."""
    gen = lb.generation()
    with _session(request) as session:
        ch = session.scalar(select(Challenge).where(Challenge.slug == c))
        version = ("missing",) if ch is None else \
            (ch.title, ch.description, tuple(lb.board_version(session, tr) for tr in ch.tracks))
    old = _cache.get(key)
    if old is not None and old.version == version:
        old.checked, old.gen = time.monotonic(), gen
        return old
    resp = _challenge_page_fresh(c, request)
    body = bytes(resp.body)
    entry = _Entry(version, gen, time.monotonic(), resp.status_code, body, "text/html; charset=utf-8",
                   '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"', {},
                   gzip.compress(body, compresslevel=6, mtime=0) if len(body) > 1024 else None)
    if ch is None or resp.status_code != 200:
        _cache.pop(key)  # never cache a miss
    else:
        _cache.put(key, entry, _settings(request).leaderboard_cache_entries)
    return entry


def _challenge_page_fresh(c: str, request: Request) -> HTMLResponse:
    with _session(request) as session:
        viewer = _viewer(request, session)
        org = _is_organizer(viewer)
        ch = session.scalar(select(Challenge).where(Challenge.slug == c))
        if ch is None:
            return _error_page(request, 404, "Not found", f"no challenge {c!r}", viewer)
        cards = []
        for tr in ch.tracks:
            if tr.visibility == Visibility.hidden and not org:
                continue
            board = lb.build_board(session, tr, organizer=False)
            top = [r for r in board["rows"] if r["rank"]][:3] if board["ranked"] else \
                [r for r in board["rows"] if not r["baseline"]][:3]
            n_sub = board["n_submissions"]  # what the public board counted (no queued, failed or post-freeze ones)
            cards.append({"track": tr, "board": board, "top": top, "n_submissions": n_sub,
                          "entries": sum(1 for r in board["rows"] if not r["baseline"])})
        return _page(_render("challenge.html", request, challenge=ch, cards=cards, viewer=viewer))


@router.get("/submissions/{submission_id}", response_class=HTMLResponse, include_in_schema=False)
def submission_page(submission_id: IdPath, request: Request) -> HTMLResponse:
    with _session(request) as session:
        viewer = _viewer(request, session)
        org = _is_organizer(viewer)
        sub = session.get(Submission, submission_id)
        missing = f"no submission #{submission_id}"
        if sub is None:
            return _error_page(request, 404, "Not found", missing, viewer)
        track = sub.track
        if not lb.may_see_submission(session, sub, viewer):  # the board's rule; the same 404 as a missing id
            return _error_page(request, 404, "Not found", missing, viewer)
        runs = sorted(sub.runs, key=lambda r: r.attempt)
        latest = runs[-1] if runs else None
        # what the viewer may see of it: the track's feedback policy (organizers: everything)
        view = submission_service.submission_public(session, [sub], viewer=viewer)[0]
        mods: list[dict] = []
        if latest is not None and sub.state == SubmissionState.succeeded and view.feedback != "none":
            rows = session.execute(select(CaseResult.modality, CaseResult.status, CaseResult.dsc, CaseResult.nsd,
                                          CaseResult.runtime_s).where(CaseResult.run_id == latest.id)).all()
            agg: dict[str, list] = {}
            for mod, status, dsc, nsd, rt in rows:
                ok = status == CaseStatus.ok
                a = agg.setdefault(mod or "other", [0, 0, 0.0, 0.0, 0.0])
                a[0] += 1
                a[1] += ok
                a[2] += dsc if ok else 0.0
                a[3] += nsd if ok else 0.0
                a[4] += rt if ok else float(track.case_timeout_s)
            for mod in lb.modality_order(set(agg)):
                n, ok, d, s, t = agg[mod]
                mods.append({"modality": mod, "cases": n, "ok": ok, "dsc": d / n, "nsd": s / n, "runtime_s": t / n})
        original = sub.reproduces
        if original is not None and not lb.may_see_submission(session, original, viewer):
            original = None
        team = session.get(Team, sub.team_id)
        return _page(_render("submission.html", request, sub=sub, track=track, challenge=track.challenge, team=team,
                             latest=latest, runs=runs, mods=mods, original=original, viewer=viewer, organizer=org,
                             view=view))


@router.get("/admin/runs/{run_id}", response_class=HTMLResponse, include_in_schema=False)
def admin_run_page(run_id: IdPath, request: Request) -> Response:
    with _session(request) as session:
        viewer = _viewer(request, session)
        if viewer is None:
            return _login_page(request, _safe_next(str(request.url.path)), status=401,
                               message="Organizer pages need you to sign in with an organizer API token.")
        if not _is_organizer(viewer):
            return _error_page(request, 403, "Forbidden", "only organizers may see run details", viewer)
        run = session.get(Run, run_id)
        if run is None:
            return _error_page(request, 404, "Not found", f"no run #{run_id}", viewer)
        sub = run.submission
        cases = session.scalars(select(CaseResult).where(CaseResult.run_id == run.id).order_by(CaseResult.case_id)).all()
        counts: dict[str, int] = {}
        for cr in cases:
            counts[cr.status.value] = counts.get(cr.status.value, 0) + 1
        from api.execution.audit import run_workers

        return _page(_render("run.html", request, run=run, sub=sub, team=session.get(Team, sub.team_id),
                             track=sub.track, cases=cases, counts=counts, viewer=viewer, organizer=True,
                             workers=run_workers(session, run),
                             siblings=sorted(sub.runs, key=lambda r: r.attempt)))


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
    if not _settings(request).trust_proxy_headers:
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
    allowed = {request.headers.get("host", "").lower(), urlsplit(_settings(request).public_base_url).netloc.lower()}
    if _settings(request).trust_proxy_headers and request.headers.get("x-forwarded-host"):
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
def login_page(request: Request, next: str = "/") -> HTMLResponse:  # noqa: A002
    return _login_page(request, _safe_next(next))


@router.post("/login", include_in_schema=False)
def login_submit(request: Request, token: str = Form(""), csrf: str = Form(""), next: str = "/") -> Response:  # noqa: A002
    nxt = _safe_next(next)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not (cookie and csrf and hmac.compare_digest(cookie.encode(), csrf.encode())) or not _same_origin(request):
        return _csrf_refused(request)
    settings = _settings(request)
    with _session(request) as session:
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
    with _session(request) as session:
        viewer = _viewer(request, session)
        return _page(_render("logout.html", request, viewer=viewer))


@router.post("/logout", include_in_schema=False)
def logout(request: Request, csrf: str = Form("")) -> Response:
    with _session(request) as session:
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

    with _session(request) as session:
        viewer = _viewer(request, session)
        org = _is_organizer(viewer)
        status = queue_status(session, _settings(request), organizer=org)
        return _page(_render("status.html", request, status=status, organizer=org, viewer=viewer))
