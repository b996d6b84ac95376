"""Organizer routes: full audit of a submission, re-run, exclude, baseline, CSV export, audit trail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.admin import service as admin
from api.auth import schemas as auth_schemas
from api.auth import service as auth_service
from api.deps import OrganizerDep, SessionDep, SettingsDep
from api.params import MAX_ID, IdPath
from api.submissions import schemas
from api.submissions import service as subs

router = APIRouter(prefix="/api/admin", tags=["organizers"])


@router.get("/submissions/{submission_id}", response_model=schemas.SubmissionOrganizerView,
            summary="Everything about a submission: all runs (host, Docker, CPU, container parameters), results, audit")
def get_submission(submission_id: IdPath, organizer: OrganizerDep, session: SessionDep):
    sub = subs.get_visible_submission(session=session, member=organizer, submission_id=submission_id)
    return subs.organizer_view(session=session, sub=sub)


@router.post("/submissions/{submission_id}/rerun", status_code=201, response_model=schemas.SubmissionPublic,
             summary="Run a submission again as a new attempt (refused while an attempt is active)")
def rerun(submission_id: IdPath, organizer: OrganizerDep, session: SessionDep, settings: SettingsDep):
    sub, note = subs.rerun_submission(session=session, settings=settings, actor=organizer, submission_id=submission_id)
    return subs.submission_public(session, [sub], note=note, viewer=organizer)[0]


@router.post("/submissions/{submission_id}/exclude", response_model=schemas.SubmissionPublic,
             summary="Exclude a submission from ranking with a reason (or include it again)")
def exclude(submission_id: IdPath, body: schemas.ExcludeRequest, organizer: OrganizerDep, session: SessionDep):
    sub = subs.set_excluded(session=session, actor=organizer, submission_id=submission_id, excluded=body.excluded,
                            reason=body.reason)
    return subs.submission_public(session, [sub], viewer=organizer)[0]


@router.post("/submissions/{submission_id}/baseline", response_model=schemas.SubmissionPublic,
             summary="Mark a submission as a baseline row (or unmark it)")
def baseline(submission_id: IdPath, body: schemas.BaselineRequest, organizer: OrganizerDep, session: SessionDep):
    sub = subs.set_baseline(session=session, actor=organizer, submission_id=submission_id, is_baseline=body.is_baseline)
    return subs.submission_public(session, [sub], viewer=organizer)[0]


@router.get("/export.csv", response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                             "description": "CSV, one row per submission x run x case"}},
            summary="Every submission x case result with all columns, as CSV")
def export_csv(organizer: OrganizerDep, settings: SettingsDep,
               challenge: Annotated[str | None, Query(max_length=64)] = None,
               track: Annotated[str | None, Query(max_length=64)] = None):
    return StreamingResponse(admin.export_csv(settings, challenge=challenge, track=track), media_type="text/csv",
                             headers={"Content-Disposition": 'attachment; filename="segarena-results.csv"'})


@router.get("/runs/{run_id}/workers", summary="Timing fairness of a run: the workers that ran its cases, their case "
            "counts and calibration, and which deviate more than 10 % from the median calibration of the run's queue")
def run_workers(run_id: IdPath, organizer: OrganizerDep, session: SessionDep) -> dict:
    from api.errors import ApiError
    from api.execution.audit import run_workers as workers_of
    from api.models import Run

    run = session.get(Run, run_id)
    if run is None:
        raise ApiError(404, "not_found", f"run {run_id} does not exist")
    return {"run_id": run.id, **workers_of(session, run)}


@router.get("/audit", response_model=list[schemas.AuditEventPublic], summary="The audit trail, newest first")
def audit(organizer: OrganizerDep, session: SessionDep,
          action: Annotated[str | None, Query(max_length=64)] = None,
          target_type: Annotated[str | None, Query(max_length=32)] = None,
          target_id: Annotated[str | None, Query(max_length=64)] = None,
          actor_member_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
          before_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
          limit: Annotated[int, Query(ge=1, le=1000)] = 200):
    return admin.list_audit(session=session, action=action, target_type=target_type, target_id=target_id,
                            actor_member_id=actor_member_id, before_id=before_id, limit=limit)


# --------------------------------------------------------------------------- a member's API tokens


@router.get("/members/{member_id}/tokens", response_model=list[auth_schemas.TokenPublic],
            summary="Every API token of a member (prefix, label, created, last used, revoked, parent), revoked ones included")
def member_tokens(member_id: IdPath, organizer: OrganizerDep, session: SessionDep):
    return auth_service.list_member_tokens(session=session, member_id=member_id)


@router.post("/members/{member_id}/tokens/{token_id}/revoke", response_model=auth_schemas.TokenRevoked,
             summary="Revoke a member's API token, every token it minted and its web sessions (audited)")
def revoke_member_token(member_id: IdPath, token_id: IdPath, organizer: OrganizerDep, session: SessionDep):
    row, cascaded = auth_service.revoke_token(session=session, actor=organizer, token_id=token_id, member_id=member_id)
    return auth_schemas.TokenRevoked(token=auth_schemas.TokenPublic.model_validate(row), also_revoked=cascaded)


@router.post("/tokens/{token_id}/revoke", response_model=auth_schemas.TokenRevoked,
             summary="Revoke any API token by id, every token it minted and its web sessions (audited)")
def revoke_any_token(token_id: IdPath, organizer: OrganizerDep, session: SessionDep):
    row, cascaded = auth_service.revoke_token(session=session, actor=organizer, token_id=token_id)
    return auth_schemas.TokenRevoked(token=auth_schemas.TokenPublic.model_validate(row), also_revoked=cascaded)
