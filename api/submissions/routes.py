"""Routes: uploading images, the participants' view of their submissions, and upload sessions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentMember, SessionDep, SettingsDep
from api.errors import ApiError
from api.lifecycle import latest_runs
from api.models import RunState, SubmissionState
from api.params import MAX_ID, IdPath, SlugPath
from api.storage import Storage
from api.submissions import schemas, service, uploads

router = APIRouter(prefix="/api", tags=["submissions"])

_BINARY_BODY = {
    "requestBody": {
        "required": True,
        "description": "The docker save archive (.tar or .tar.gz) as the raw body.",
        "content": {t: {"schema": {"type": "string", "format": "binary"}}
                    for t in ("application/octet-stream", "application/x-tar", "application/gzip")},
    }
}
UploadIdPath = Annotated[str, Path(min_length=1, max_length=64, description="The upload_id of an upload session.")]


def _view(session, sid: int, note: str | None = None, viewer=None) -> schemas.SubmissionPublic:
    sub = service.load_submission(session, sid)
    if sub is None:
        raise ApiError(404, "not_found", f"submission {sid} does not exist")
    return service.submission_public(session, [sub], note=note, viewer=viewer)[0]


@router.post("/challenges/{challenge}/tracks/{track}/submissions", status_code=201,
             response_model=schemas.SubmissionPublic, openapi_extra=_BINARY_BODY,
             summary="Submit an image: the docker save archive streams as the request body")
async def upload_submission(
    challenge: SlugPath, track: SlugPath, request: Request, member: CurrentMember, session: SessionDep,
    settings: SettingsDep,
    label: Annotated[str, Query(max_length=200)] = "",
    reproduces: Annotated[int | None, Query(ge=1, le=MAX_ID,
                                            description="Reproducibility tracks: the submission reproduced.")] = None,
    filename: Annotated[str, Query(max_length=255)] = "",
):
    ticket = await run_in_threadpool(lambda: service.prepare_submission(
        session=session, member=member, challenge=challenge, track=track, reproduces=reproduces, label=label,
        settings=settings))
    await run_in_threadpool(session.commit)  # hold no DB connection while the archive streams in
    staged = await uploads.receive_archive(request, settings)
    try:
        sid, note = await run_in_threadpool(lambda: service.create_submission(
            settings=settings, ticket=ticket, staged=staged, actor_id=member.id))
    finally:
        Storage.remove(staged.path)  # moved into storage on success; deleted on any refusal
    return await run_in_threadpool(_view, session, sid, note, member)


@router.post("/challenges/{challenge}/tracks/{track}/uploads", status_code=201, response_model=schemas.UploadPublic,
             summary="Open a resumable upload session (then PUT chunks with Content-Range)")
def create_upload(challenge: SlugPath, track: SlugPath, body: schemas.UploadCreate, member: CurrentMember,
                  session: SessionDep, settings: SettingsDep):
    row = uploads.create_upload(session=session, settings=settings, member=member, challenge=challenge, track=track, body=body)
    return uploads.upload_public(settings, row)


@router.put("/uploads/{upload_id}", response_model=schemas.UploadPublic, openapi_extra=_BINARY_BODY,
            summary="Send the next chunk of an upload (Content-Range: bytes START-END/TOTAL)")
async def put_chunk(upload_id: UploadIdPath, request: Request, member: CurrentMember, settings: SettingsDep,
                    content_range: Annotated[str, Header(alias="Content-Range", max_length=80)]):
    return await uploads.put_chunk(request=request, settings=settings, member=member, upload_id=upload_id,
                                   content_range=content_range)


@router.get("/uploads/{upload_id}", response_model=schemas.UploadPublic, summary="How much of an upload has arrived")
def upload_status(upload_id: UploadIdPath, member: CurrentMember, session: SessionDep, settings: SettingsDep):
    return uploads.upload_status(session=session, settings=settings, member=member, upload_id=upload_id)


@router.post("/uploads/{upload_id}/complete", status_code=201, response_model=schemas.SubmissionPublic,
             summary="Finish an upload: check the archive and queue the submission")
async def complete_upload(upload_id: UploadIdPath, member: CurrentMember, session: SessionDep, settings: SettingsDep):
    sid, note = await uploads.complete_upload(settings=settings, member=member, upload_id=upload_id)
    return await run_in_threadpool(_view, session, sid, note, member)


@router.delete("/uploads/{upload_id}", status_code=204, response_class=Response, summary="Abandon an upload session")
def abort_upload(upload_id: UploadIdPath, member: CurrentMember, session: SessionDep, settings: SettingsDep):
    uploads.abort_upload(session=session, settings=settings, member=member, upload_id=upload_id)
    return Response(status_code=204)


@router.get("/submissions", response_model=list[schemas.SubmissionPublic],
            summary="Your team's submissions (organizers: all), newest first")
def list_submissions(
    member: CurrentMember, session: SessionDep,
    challenge: Annotated[str | None, Query(max_length=64)] = None,
    track: Annotated[str | None, Query(max_length=64)] = None,
    track_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    team_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    state: SubmissionState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
):
    subs = service.list_submissions(session=session, member=member, challenge=challenge, track=track, track_id=track_id,
                                    team_id=team_id, state=state, limit=limit, offset=offset)
    return service.submission_public(session, subs, viewer=member)


@router.get("/submissions/{submission_id}", response_model=schemas.SubmissionPublic,
            summary="A submission: state, reason, attempt, per-case progress, aggregates")
def get_submission(submission_id: IdPath, member: CurrentMember, session: SessionDep, settings: SettingsDep):
    sub = service.get_visible_submission(session=session, member=member, submission_id=submission_id)
    view = service.submission_public(session, [sub], viewer=member)[0]
    if view.run_state == RunState.queued:
        from api.status.service import queue_position

        view.queue = queue_position(session, settings, latest_runs(session, [sub.id]).get(sub.id))
    return view


@router.post("/submissions/{submission_id}/cancel", response_model=schemas.SubmissionPublic,
             summary="Cancel a submission that has not finished: queued shards stop at once, running containers "
                     "within a heartbeat (refunded from the quota only before it started, up to a daily limit)")
def cancel_submission(submission_id: IdPath, member: CurrentMember, session: SessionDep, settings: SettingsDep):
    sub = service.cancel_submission(session=session, member=member, submission_id=submission_id, settings=settings)
    return service.submission_public(session, [sub], viewer=member)[0]


@router.get("/submissions/{submission_id}/logs", response_model=schemas.SubmissionLogs,
            summary="The latest attempt's per-case stdout/stderr tails")
def submission_logs(submission_id: IdPath, member: CurrentMember, session: SessionDep):
    sub = service.get_visible_submission(session=session, member=member, submission_id=submission_id)
    return service.submission_logs(session=session, sub=sub, viewer=member)


@router.get("/submissions/{submission_id}/results", response_model=schemas.SubmissionResults,
            summary="The latest attempt's per-case results")
def submission_results(submission_id: IdPath, member: CurrentMember, session: SessionDep):
    sub = service.get_visible_submission(session=session, member=member, submission_id=submission_id)
    return service.submission_results(session=session, sub=sub, viewer=member)
