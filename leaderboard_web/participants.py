"""Participant pages: sign-up and the one-time token claim (anonymous), a challenge's terms, the signed-in
participant's own page (team, join code, terms, quota left, submissions with live state and queue position) and a
result page per submission; the organizers' sign-up decisions page.

``/challenges/{challenge}/signup``  ask to take part (anonymous form; the answer shows the claim code once)
``/signup/claim``                exchange the claim code for the API token, once (then signed in)
``/challenges/{challenge}/terms``   read the terms; signed in: accept them
``/me``                          team, join code (rotate), terms to accept, quota per track, submissions (live)
``/me/submissions.json``         what ``/me`` polls (the signed-in browser's cookie)
``/me/submissions/{id}``         a submission's result: overall, per modality, per case as the feedback policy allows
``/me/submissions/{id}.json``    what that page polls
``/admin/challenges/{challenge}/signups``  organizers: approve or refuse

Every POST carries a CSRF token: the web session's once signed in (``pages._checked_session``), a double-submit cookie
on the anonymous forms. The claim code travels in the claim link's URL fragment (``#code=``), which browsers never
send to servers: a tiny script copies it into the form.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.leaderboard.viewer import COOKIE, is_organizer, request_session, request_settings
from api.models import Member, SignupState
from api.params import IdPath, SlugPath, as_utc
from api.participants import schemas, service
from api.participants.ratelimit import claim_limiter, client_address

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["pages"])
FORM_CSRF_COOKIE = "segarena_form_csrf"  # double-submit token of the anonymous forms (no session yet)
_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "same-origin"}  # no-referrer would make form POSTs "Origin: null"


def _pages() -> Any:
    from leaderboard_web import pages

    return pages


def _html(request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    p = _pages()
    resp = p._page(p._render(template, request, **ctx), status)
    resp.headers.update(_NO_STORE)
    return resp


def _error(request: Request, status: int, title: str, message: str, viewer: Member | None) -> HTMLResponse:
    return _pages()._error_page(request, status, title, message, viewer)


def _form_member(request: Request, session: Session, csrf: str) -> Member | HTMLResponse:
    """The signed-in member posting this form, else the CSRF refusal (403) when its session or token does not check."""
    p = _pages()
    ws = p._checked_session(request, session, csrf)
    member = session.get(Member, ws.member_id) if ws is not None else None
    return member if member is not None else p._csrf_refused(request)


def _sign_in(request: Request, message: str) -> HTMLResponse:
    p = _pages()
    return p._login_page(request, p._safe_next(str(request.url.path)), status=401, message=message)


# --------------------------------------------------------------------------- anonymous forms: double-submit CSRF


def _form_csrf(request: Request) -> str:
    value = request.cookies.get(FORM_CSRF_COOKIE, "")
    if 20 <= len(value) <= 64 and value.replace("-", "").replace("_", "").isalnum():
        return value
    return secrets.token_urlsafe(32)


def _with_form_cookie(request: Request, resp: HTMLResponse, csrf: str) -> HTMLResponse:
    resp.set_cookie(FORM_CSRF_COOKIE, csrf, httponly=True, samesite="strict", max_age=3600, path="/",
                    secure=_pages()._https(request))
    return resp


def _form_ok(request: Request, sent: str) -> bool:
    cookie = request.cookies.get(FORM_CSRF_COOKIE, "")
    return bool(cookie and sent and hmac.compare_digest(cookie.encode(), sent.encode())) and _pages()._same_origin(request)


# --------------------------------------------------------------------------- sign-up


@router.get("/challenges/{challenge}/signup", response_class=HTMLResponse, include_in_schema=False)
def signup_page(challenge: SlugPath, request: Request) -> Response:
    with request_session(request) as session:
        viewer = _pages()._viewer(request, session)
        try:
            ch = service.get_challenge(session=session, slug=challenge)
        except ApiError as exc:
            return _error(request, 404, "Not found", exc.message, viewer)
        csrf = _form_csrf(request)
        return _with_form_cookie(request, _html(request, "signup.html", challenge=ch, viewer=viewer,
                                                part=service.participation(ch), form={}, error="", created=None,
                                                form_csrf=csrf), csrf)


@router.post("/challenges/{challenge}/signup", response_class=HTMLResponse, include_in_schema=False)
def signup_submit(challenge: SlugPath, request: Request, csrf: str = Form(""), name: str = Form(""),
                  email: str = Form(""), affiliation: str = Form(""), team_choice: str = Form("new"),
                  team_name: str = Form(""), join_code: str = Form("")) -> Response:
    if not _form_ok(request, csrf):
        return _pages()._csrf_refused(request)
    settings = request_settings(request)
    form = {"name": name, "email": email, "affiliation": affiliation, "team_choice": team_choice,
            "team_name": team_name, "join_code": join_code}
    with request_session(request) as session:
        viewer = _pages()._viewer(request, session)
        try:
            ch = service.get_challenge(session=session, slug=challenge)
        except ApiError as exc:
            return _error(request, 404, "Not found", exc.message, viewer)
        status, error, created = 201, "", None
        try:
            body = schemas.SignupCreate(name=name, email=email, affiliation=affiliation,
                                        team_name=team_name if team_choice == "new" else "",
                                        join_code=join_code if team_choice == "join" else "")
            created = service.register(session=session, settings=settings, challenge=challenge, body=body,
                                       client=client_address(request, settings))
        except ValidationError as exc:
            status, error = 422, "; ".join(
                (".".join(str(x) for x in e["loc"]) + ": " if e["loc"] else "") + str(e["msg"]).removeprefix("Value error, ")
                for e in exc.errors())
        except ApiError as exc:
            status, error = exc.status, exc.message
        csrf_value = _form_csrf(request)
        return _with_form_cookie(request, _html(request, "signup.html", status, challenge=ch, viewer=viewer,
                                                part=service.participation(ch), form=form, error=error,
                                                created=created, form_csrf=csrf_value), csrf_value)


@router.get("/signup/claim", response_class=HTMLResponse, include_in_schema=False)
def claim_page(request: Request) -> Response:
    with request_session(request) as session:
        viewer = _pages()._viewer(request, session)
    csrf = _form_csrf(request)
    return _with_form_cookie(request, _html(request, "claim.html", viewer=viewer, result=None, error="",
                                            form_csrf=csrf), csrf)


@router.post("/signup/claim", response_class=HTMLResponse, include_in_schema=False)
def claim_submit(request: Request, csrf: str = Form(""), claim_code: str = Form("")) -> Response:
    p = _pages()
    if not _form_ok(request, csrf):
        return p._csrf_refused(request)
    settings = request_settings(request)
    status, error, result, sid = 200, "", None, None
    with request_session(request) as session:
        viewer = p._viewer(request, session)
        wait = claim_limiter(request).hit(client_address(request, settings))
        if wait is not None:
            status, error = 429, f"Too many claim attempts from your address; try again in {wait:.0f} s."
        elif not claim_code.strip() or len(claim_code) > 128:
            status, error = 422, "Paste the claim code you were given when you signed up (it starts with sac_)."
        else:
            try:
                result = service.claim(session=session, settings=settings, code=claim_code)
            except ApiError as exc:
                status, error = exc.status, exc.message
        if result is not None and result.token:
            from api.auth import service as auth_service

            started = auth_service.start_web_session(session=session, token=result.token,
                                                     hours=settings.web_session_hours)
            if started is not None:
                ws, sid = started
                request.state.csrf = ws.csrf_token
                viewer = session.get(Member, ws.member_id)
    csrf_value = _form_csrf(request)
    resp = _html(request, "claim.html", status, viewer=viewer, result=result, error=error, form_csrf=csrf_value)
    if sid is not None:  # signed in with the new token at once (the page shows the token for the CLI, once)
        resp.set_cookie(COOKIE, sid, httponly=True, samesite="lax", max_age=int(settings.web_session_hours * 3600),
                        path="/", secure=p._https(request))
    return _with_form_cookie(request, resp, csrf_value)


# --------------------------------------------------------------------------- terms


@router.get("/challenges/{challenge}/terms", response_class=HTMLResponse, include_in_schema=False)
def terms_page(challenge: SlugPath, request: Request) -> Response:
    with request_session(request) as session:
        viewer = _pages()._viewer(request, session)
        try:
            terms = service.terms_for(session=session, challenge=challenge, member=viewer)
            ch = service.get_challenge(session=session, slug=challenge)
        except ApiError as exc:
            return _error(request, 404, "Not found", exc.message, viewer)
        return _html(request, "terms.html", challenge=ch, terms=terms, viewer=viewer, message="")


@router.post("/challenges/{challenge}/terms", include_in_schema=False)
def terms_accept(challenge: SlugPath, request: Request, csrf: str = Form(""), sha256: str = Form("")) -> Response:
    with request_session(request) as session:
        member = _form_member(request, session, csrf)
        if isinstance(member, Response):
            return member
        try:
            service.accept_terms(session=session, member=member, challenge=challenge, sha256=sha256 or None)
        except ApiError as exc:
            terms = service.terms_for(session=session, challenge=challenge, member=member)
            ch = service.get_challenge(session=session, slug=challenge)
            return _html(request, "terms.html", exc.status, challenge=ch, terms=terms, viewer=member,
                         message=exc.message)
    return RedirectResponse(f"/challenges/{challenge}/terms?accepted=1", status_code=303)


# --------------------------------------------------------------------------- the participant's own pages


def _submissions_json(session: Session, settings: Any, member: Member, limit: int = 50) -> list[dict[str, Any]]:
    """The team's latest submissions as the page shows them (feedback policy applied), with queue positions."""
    from api.lifecycle import latest_runs
    from api.models import RunState
    from api.status.service import queue_position
    from api.submissions import service as submission_service

    subs = submission_service.list_submissions(session=session, member=member, limit=limit)
    views = submission_service.submission_public(session, subs, viewer=member)
    runs = latest_runs(session, [s.id for s in subs])
    out = []
    for s, v in zip(subs, views):
        q = queue_position(session, settings, runs.get(s.id)) if v.run_state == RunState.queued else None
        out.append({
            "id": v.id, "challenge": v.challenge, "track": v.track, "track_title": s.track.title, "label": v.label,
            "state": v.state.value, "reason": v.reason, "done": v.progress.done, "total": v.progress.total,
            "dsc": v.dsc, "nsd": v.nsd, "runtime_s": v.runtime_s, "created_at": _iso(v.created_at),
            "finished_at": _iso(v.finished_at), "feedback": v.feedback, "attempt": v.attempt,
            "queue": q.model_dump() if q is not None else None,
        })
    return out


def _iso(value: Any) -> str | None:
    aware = as_utc(value)
    return aware.isoformat().replace("+00:00", "Z") if aware is not None else None


def _participant(request: Request, session: Session) -> tuple[Member | None, Response | None]:
    viewer = _pages()._viewer(request, session)
    if viewer is None:
        return None, _sign_in(request, "Your page needs you to sign in with your API token.")
    return viewer, None


@router.get("/me", response_class=HTMLResponse, include_in_schema=False)
def my_page(request: Request) -> Response:
    settings = request_settings(request)
    with request_session(request) as session:
        viewer, refused = _participant(request, session)
        if refused is not None or viewer is None:
            return refused or _error(request, 401, "Sign in", "sign in", None)
        mine = service.my_participation(session=session, settings=settings, member=viewer)
        code = service.join_code(session=session, member=viewer) if viewer.team_id is not None else None
        subs = _submissions_json(session, settings, viewer) if viewer.team_id is not None else []
        from api.accounting.service import team_tracks_usage  # compute used per track, budgets (docs/accounting.md)

        usage = ([u.as_dict() for u in team_tracks_usage(session, viewer.team_id, settings=settings)]
                 if viewer.team_id is not None else [])
        return _html(request, "me.html", viewer=viewer, mine=mine, code=code, subs=subs, usage=usage,
                     organizer=is_organizer(viewer))


@router.get("/me/submissions.json", include_in_schema=False)
def my_submissions_json(request: Request) -> Response:
    settings = request_settings(request)
    with request_session(request) as session:
        viewer = _pages()._viewer(request, session)
        if viewer is None:
            return JSONResponse({"code": "unauthorized", "message": "sign in first"}, status_code=401)
        return JSONResponse({"submissions": _submissions_json(session, settings, viewer)}, headers=_NO_STORE)


@router.post("/me/join-code", include_in_schema=False)
def rotate_join_code(request: Request, csrf: str = Form("")) -> Response:
    with request_session(request) as session:
        member = _form_member(request, session, csrf)
        if isinstance(member, Response):
            return member
        try:
            service.join_code(session=session, member=member, rotate=True)
        except ApiError as exc:
            return _error(request, exc.status, "Cannot rotate", exc.message, member)
    return RedirectResponse("/me?rotated=1#team", status_code=303)


def _result(session: Session, settings: Any, viewer: Member, submission_id: int) -> dict[str, Any] | None:
    """A submission as its team may see it: state, queue, overall, per modality, per case (feedback policy)."""
    from api.leaderboard import service as board_service
    from api.lifecycle import latest_runs
    from api.models import RunState
    from api.status.service import queue_position
    from api.submissions import service as submission_service

    try:
        sub = submission_service.get_visible_submission(session=session, member=viewer, submission_id=submission_id)
    except ApiError:
        return None
    view = submission_service.submission_public(session, [sub], viewer=viewer)[0]
    results = submission_service.submission_results(session=session, sub=sub, viewer=viewer)
    run = latest_runs(session, [sub.id]).get(sub.id)
    queue = queue_position(session, settings, run) if view.run_state == RunState.queued else None
    mods = []
    if run is not None and view.feedback != "none" and view.progress.done:
        mods = [{"modality": m.modality, "cases": m.cases, "ok": m.ok, "dsc": m.dsc, "nsd": m.nsd,
                 "runtime_s": m.runtime_s} for m in board_service.submission_modalities(session, run, sub.track)]
    return {
        "id": sub.id, "challenge": view.challenge, "track": view.track, "track_title": sub.track.title,
        "label": view.label, "team": view.team, "state": view.state.value, "reason": view.reason,
        "attempt": view.attempt, "done": view.progress.done, "total": view.progress.total,
        "by_status": view.progress.by_status, "dsc": view.dsc, "nsd": view.nsd, "runtime_s": view.runtime_s,
        "created_at": _iso(view.created_at), "finished_at": _iso(view.finished_at), "feedback": results.feedback,
        "feedback_note": results.feedback_note or view.feedback_note, "modalities": mods,
        "queue": queue.model_dump() if queue is not None else None,
        "cases": [{"case_id": c.case_id, "modality": c.modality, "status": c.status.value, "reason": c.reason,
                   "dsc": c.dsc, "nsd": c.nsd, "runtime_s": c.runtime_s, "undefined": c.undefined}
                  for c in results.cases],
        "final": view.state.value in ("succeeded", "failed", "cancelled"),
    }


# the .json route first: "{id}.json" would otherwise match the page route (and fail its integer check)
@router.get("/me/submissions/{submission_id}.json", include_in_schema=False)
def my_result_json(submission_id: IdPath, request: Request) -> Response:
    settings = request_settings(request)
    with request_session(request) as session:
        viewer = _pages()._viewer(request, session)
        if viewer is None:
            return JSONResponse({"code": "unauthorized", "message": "sign in first"}, status_code=401)
        data = _result(session, settings, viewer, submission_id)
        if data is None:
            return JSONResponse({"code": "not_found", "message": f"no submission #{submission_id} of your team"},
                                status_code=404)
        return JSONResponse(data, headers=_NO_STORE)


@router.get("/me/submissions/{submission_id}", response_class=HTMLResponse, include_in_schema=False)
def my_result_page(submission_id: IdPath, request: Request) -> Response:
    settings = request_settings(request)
    with request_session(request) as session:
        viewer, refused = _participant(request, session)
        if refused is not None or viewer is None:
            return refused or _error(request, 401, "Sign in", "sign in", None)
        data = _result(session, settings, viewer, submission_id)
        if data is None:  # missing or another team's: the same 404
            return _error(request, 404, "Not found", f"no submission #{submission_id} of your team", viewer)
        return _html(request, "my_result.html", viewer=viewer, r=data)


# --------------------------------------------------------------------------- organizers: sign-up decisions


@router.get("/admin/challenges/{challenge}/signups", response_class=HTMLResponse, include_in_schema=False)
def signups_page(challenge: SlugPath, request: Request, state: str = "pending") -> Response:
    with request_session(request) as session:
        viewer = _pages()._organizer_viewer(request, session, "only organizers may decide sign-up requests")
        if isinstance(viewer, Response):
            return viewer
        try:
            ch = service.get_challenge(session=session, slug=challenge)
            wanted = None if state == "all" else SignupState(state)
        except ApiError as exc:
            return _error(request, 404, "Not found", exc.message, viewer)
        except ValueError:
            return _error(request, 422, "Bad filter", "state: pending, approved, refused or all", viewer)
        rows = service.list_signups(session=session, challenge=challenge, state=wanted, limit=500)
        return _html(request, "admin_signups.html", viewer=viewer, organizer=True, challenge=ch, rows=rows,
                     state=state, part=service.participation(ch), message=request.query_params.get("msg", "")[:300])


@router.post("/admin/challenges/{challenge}/signups/{signup_id}", include_in_schema=False)
def signups_decide(challenge: SlugPath, signup_id: IdPath, request: Request, csrf: str = Form(""),
                   decision: str = Form(""), reason: str = Form("")) -> Response:
    from urllib.parse import quote

    settings = request_settings(request)
    with request_session(request) as session:
        member = _form_member(request, session, csrf)
        if isinstance(member, Response):
            return member
        if not is_organizer(member):
            return _error(request, 403, "Forbidden", "only organizers may decide sign-up requests", member)
        try:
            if decision == "approve":
                row = service.approve(session=session, settings=settings, actor=member, signup_id=signup_id)
                msg = f"approved #{row.id}: {row.name} is member {row.member_id} of team {row.team}"
            elif decision == "refuse":
                row = service.refuse(session=session, actor=member, signup_id=signup_id, reason=reason[:2000])
                msg = f"refused #{row.id}"
            else:
                msg = "choose approve or refuse"
        except ApiError as exc:
            msg = f"#{signup_id}: {exc.message}"
    return RedirectResponse(f"/admin/challenges/{challenge}/signups?msg={quote(msg)}", status_code=303)
