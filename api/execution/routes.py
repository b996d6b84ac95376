"""HTTP routes of sharded execution.

- ``/api/worker/*`` (execution hosts, worker tokens only; docs/worker-protocol.md): hello, ping, claim, image and
  input downloads (streamed from storage, lease/holder checked), case upload (bounded multipart), heartbeat,
  finish.
- ``/api/admin/workers`` (organizers): create a worker identity (token shown once), list (with its hosts: last
  seen, calibration, cases run), revoke.
"""

from __future__ import annotations

import json
import logging
import secrets
import statistics
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.audit import record
from api.auth.tokens import bearer_token, resolve_caller
from api.db import session_scope
from api.deps import OrganizerDep, SessionDep, SettingsDep
from api.errors import ApiError
from api.models import CaseResult, Run, Shard, ShardState, Submission, WorkerNode, utcnow
from api.params import IdPath
from api.storage import BadKey, ObjectNotFound, Storage, StorageError, object_response
from evaluator.io import bound_text

from . import identity, shards
from .contract import CASE_STATUSES
from .identity import WORKER_NAME_PATTERN, WorkerIdentity
from .testsets import load_testset

__all__ = ["router", "admin_router", "WorkerDep"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/worker", tags=["execution hosts"])
admin_router = APIRouter(prefix="/api/admin/workers", tags=["organizers"])

_MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers on top of the output and the meta


# --------------------------------------------------------------------------------------------- identity


_WORKER_HINT = ("worker routes need a worker token: send 'Authorization: Bearer <token>' (an organizer creates one "
                "with `segarena admin worker create NAME --queue cpu`)")


def _worker(request: Request, session: SessionDep) -> WorkerIdentity:
    token = bearer_token(request.headers.get("authorization"), hint=_WORKER_HINT)
    if not token:
        raise ApiError(401, "unauthorized", _WORKER_HINT)
    member = resolve_caller(session, token=token, audience="worker").member
    if member is None:  # resolve_caller refuses a bad token; a token always names its member
        raise ApiError(401, "unauthorized", _WORKER_HINT)
    ident = WorkerIdentity(member.id, member.name, tuple(identity.parse_queue_list(member.worker_queues)))
    session.commit()
    return ident


WorkerDep = Annotated[WorkerIdentity, Depends(_worker)]
NamePath = Annotated[str, PathParam(min_length=1, max_length=100, pattern=WORKER_NAME_PATTERN)]
Sha256Path = Annotated[str, PathParam(pattern=r"^[0-9a-f]{64}$")]
CaseIdPath = Annotated[str, PathParam(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")]
Lease = Annotated[str, Field(min_length=8, max_length=128)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HelloBody(_Body):
    name: str = Field(min_length=1, max_length=100, pattern=WORKER_NAME_PATTERN)
    queues: list[Annotated[str, Field(max_length=32)]] = Field(min_length=1, max_length=16)
    host: str = Field(default="", max_length=200)
    pid: int | None = Field(default=None, ge=0, le=2**31 - 1)
    cpu_model: str = Field(default="", max_length=200)
    cores: int | None = Field(default=None, ge=0, le=1_000_000)
    gpu_model: str = Field(default="", max_length=200)
    docker_version: str = Field(default="", max_length=100)
    calibration_s: float | None = Field(default=None, ge=0, le=1e6, allow_inf_nan=False)


class HelloAnswer(BaseModel):
    name: str
    queues: list[str]
    heartbeat_s: float
    calibration_flag: str = ""


class PingBody(_Body):
    name: str = Field(min_length=1, max_length=100, pattern=WORKER_NAME_PATTERN)
    offline: bool = False


class ClaimBody(_Body):
    name: str = Field(min_length=1, max_length=100, pattern=WORKER_NAME_PATTERN)
    queue: str = Field(min_length=1, max_length=32)


class LeaseBody(_Body):
    lease: Lease


class FinishBody(_Body):
    lease: Lease
    outcome: Literal["done", "infra"]
    reason: str = Field(default="", max_length=20_000)


class CancelAnswer(BaseModel):
    cancel: bool


class UploadAnswer(BaseModel):
    cancel: bool
    duplicate: bool = False
    case_result_id: int | None = None


class CaseMeta(BaseModel):
    """A case upload's ``meta`` part. Unknown keys are ignored; strings are bounded when stored."""

    model_config = ConfigDict(extra="ignore")
    lease: Lease
    status: Literal[CASE_STATUSES]  # type: ignore[valid-type]
    reason: str = ""
    runtime_s: float = Field(default=0.0, ge=0, le=1e7, allow_inf_nan=False)
    cpu_s: float | None = Field(default=None, ge=0, le=1e9, allow_inf_nan=False)
    peak_memory_bytes: int | None = Field(default=None, ge=0, le=2**62)
    exit_code: int | None = Field(default=None, ge=-(2**31), le=2**31 - 1)
    wall_s: float | None = Field(default=None, ge=0, le=1e7, allow_inf_nan=False)
    stdout_tail: str = ""
    stderr_tail: str = ""
    container_params: dict[str, Any] | None = None


# --------------------------------------------------------------------------------------------- worker routes


def _calibration_flag(s, node: WorkerNode, queues: list[str]) -> str:
    """A note when this host's calibration deviates more than 10 % from the median of its queues' other hosts."""
    if node.calibration_s is None:
        return ""
    others = [n.calibration_s for n in s.scalars(select(WorkerNode).where(WorkerNode.name != node.name))
              if n.calibration_s and set(identity.parse_queue_list(n.queues)) & set(queues)]
    if not others:
        return ""
    median = statistics.median(others)
    dev = (node.calibration_s - median) / median if median else 0.0
    if abs(dev) <= 0.10:
        return ""
    return (f"calibration {node.calibration_s:.3f} s deviates {dev:+.0%} from the median {median:.3f} s of the other "
            f"hosts of {', '.join(queues)}: its case times are not comparable (one hardware class per queue)")


@router.post("/hello", response_model=HelloAnswer, summary="An execution host announces itself (upserts worker_nodes)")
def hello(body: HelloBody, ident: WorkerDep, session: SessionDep, settings: SettingsDep):
    queues = identity.check_queues(settings, body.queues, status=403)
    refused = [q for q in queues if q not in ident.queues]
    if refused:
        raise ApiError(403, "forbidden", f"this worker token may serve {', '.join(ident.queues) or 'no queue'}, not "
                       f"{', '.join(refused)}; ask the organizers for a token of that queue")
    node = session.scalar(select(WorkerNode).where(WorkerNode.name == body.name))
    now = utcnow()
    if node is not None and node.member_id not in (None, ident.member_id):
        raise ApiError(403, "forbidden", f"worker name {body.name!r} belongs to another worker identity; choose another")
    if node is None:
        node = WorkerNode(name=body.name, started_at=now)
        session.add(node)
    kinds = {settings.declared_queues[q] for q in queues}
    node.queues, node.kind = ",".join(queues)[:200], ("gpu" if "gpu" in kinds else "cpu")
    node.host, node.pid, node.cpu_model, node.cores = body.host, body.pid, body.cpu_model, body.cores
    node.gpu_model, node.docker_version, node.calibration_s = body.gpu_model, body.docker_version, body.calibration_s
    node.member_id, node.last_seen_at, node.started_at = ident.member_id, now, now
    session.flush()
    flag = _calibration_flag(session, node, queues)
    record(session, actor=None, actor_label=f"worker:{body.name}", action="worker.hello", target_type="member",
           target_id=ident.member_id, host=body.host, queues=queues, cpu_model=body.cpu_model, cores=body.cores,
           gpu_model=body.gpu_model, calibration_s=body.calibration_s, **({"calibration_flag": flag} if flag else {}))
    session.commit()
    return HelloAnswer(name=body.name, queues=queues, heartbeat_s=float(settings.shard_heartbeat_s),
                       calibration_flag=flag)


@router.post("/ping", status_code=204, summary="An idle execution host says it is still there (refreshes last seen)",
             responses={204: {"description": "seen"}, 409: {"description": "say hello first"}})
def ping(body: PingBody, ident: WorkerDep, session: SessionDep, settings: SettingsDep):
    """Refreshes the node's ``last_seen_at`` (GET /api/status counts it online); ``offline: true`` marks a clean
    stop (not counted online from now on). Workers send it every ``SEGARENA_WORKER_HEARTBEAT_S`` while idle."""
    node = session.scalar(select(WorkerNode).where(WorkerNode.name == body.name))
    if node is None:
        raise ApiError(409, "hello_first", f"worker {body.name!r} has not said hello: POST /api/worker/hello first")
    if node.member_id != ident.member_id:
        raise ApiError(403, "forbidden", f"worker name {body.name!r} belongs to another worker identity")
    now = utcnow()
    node.last_seen_at = now - timedelta(seconds=float(settings.worker_online_s) + 1) if body.offline else now
    session.commit()
    return Response(status_code=204)


@router.post("/claim", summary="Take the fairest queued shard of a queue (200 with its spec and lease) or 204",
             responses={200: {"description": "the shard spec (docs/worker-protocol.md)"}, 204: {"description": "nothing to do"}})
def claim(body: ClaimBody, ident: WorkerDep, settings: SettingsDep):
    spec = shards.claim_shard(settings, ident, name=body.name, queue=body.queue)
    if spec is None:
        return Response(status_code=204)
    return spec


@router.get("/images/{sha256}", response_class=FileResponse, summary="A submission's image archive, streamed",
            responses={200: {"content": {"application/octet-stream": {}}, "description": "the archive"},
                       410: {"description": "the archive was deleted (retention)"}})
def image(sha256: Sha256Path, ident: WorkerDep, session: SessionDep, settings: SettingsDep):
    """The archive object ``Submission.archive_path`` streamed from either storage backend (the file itself from
    the local directory, chunks with Content-Length from S3), with its digest in ``X-Content-SHA256``."""
    sub = session.scalar(
        select(Submission).join(Run, Run.submission_id == Submission.id).join(Shard, Shard.run_id == Run.id)
        .join(WorkerNode, WorkerNode.name == Shard.worker_name)
        .where(Submission.archive_sha256 == sha256, Shard.state == ShardState.running,
               WorkerNode.member_id == ident.member_id).limit(1))
    if sub is None:
        raise ApiError(403, "forbidden", "this worker holds no running shard of a submission with this archive: claim "
                       "a shard first (POST /api/worker/claim)")
    gone = ApiError(410, "gone", f"the archive of submission {sub.id} is no longer in storage (deleted after "
                    f"{float(settings.archive_retention_h):g} h of retention, or lost)")
    if sub.archive_deleted_at is not None or not sub.archive_path:
        raise gone
    headers = {"X-Content-SHA256": sub.archive_sha256}
    legacy = Path(sub.archive_path)
    if legacy.is_absolute():  # an absolute path recorded by an old deployment (local storage only)
        if not legacy.is_file():
            raise gone
        return FileResponse(legacy, media_type="application/octet-stream", filename=legacy.name, headers=headers)
    try:
        return object_response(Storage.from_settings(settings), sub.archive_path, headers=headers)
    except (ObjectNotFound, BadKey):
        raise gone from None
    except StorageError as exc:
        log.error("could not read the archive %s of submission %s: %s", sub.archive_path, sub.id, exc)
        raise ApiError(503, "storage_unavailable", "the server could not read the archive from its storage; try "
                       "again shortly") from None


@router.get("/shards/{shard_id}/inputs/{case_id}", response_class=FileResponse,
            summary="A case's input npz, streamed (lease holder only)",
            responses={200: {"content": {"application/octet-stream": {}}, "description": "the input"}})
def case_input(shard_id: IdPath, case_id: CaseIdPath, lease: Annotated[str, Query(min_length=8, max_length=128)],
               ident: WorkerDep, session: SessionDep, settings: SettingsDep):
    shard = shards.held_shard(session, ident, shard_id, lease)
    if case_id not in (shard.case_ids or []):
        raise ApiError(404, "not_found", f"case {case_id!r} is not in shard {shard_id}")
    run = session.get_one(Run, shard.run_id)
    testset = run.testset or run.submission.track.testset
    # Test sets stay on the trusted host with either storage backend (materialized under storage_dir/testsets, or
    # a manifest's directory): inputs are streamed from there, never copied to object storage.
    _m, root, index = load_testset(testset, Storage.from_settings(settings))
    case = index[case_id]
    path = Path(root) / case.input.path
    if not path.is_file():
        raise ApiError(410, "gone", f"the input of case {case_id!r} is missing from the trusted host's test set")
    return FileResponse(path, media_type="application/octet-stream", filename=path.name,
                        headers={"X-Content-SHA256": case.input.sha256})


@router.post("/shards/{shard_id}/heartbeat", response_model=CancelAnswer,
             summary="Keep a shard's lease alive; 409 when it was lost (stop)")
def heartbeat(shard_id: IdPath, body: LeaseBody, ident: WorkerDep, settings: SettingsDep):
    return CancelAnswer(cancel=shards.heartbeat(settings, ident, shard_id, body.lease))


@router.post("/shards/{shard_id}/finish", response_model=CancelAnswer,
             summary="A shard is done, or failed for an infrastructure reason (requeued with a new lease)")
def finish(shard_id: IdPath, body: FinishBody, ident: WorkerDep, settings: SettingsDep):
    return CancelAnswer(cancel=shards.finish_shard(settings, ident, shard_id, body.lease, body.outcome, body.reason))


@router.post("/shards/{shard_id}/cases/{case_id}", response_model=UploadAnswer,
             summary="Upload a case's output and measurements (multipart: meta JSON + optional output file)",
             openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                 "type": "object", "required": ["meta"],
                 "properties": {"meta": {"type": "string", "description": "JSON: lease, status, reason, runtime_s, …"},
                                "output": {"type": "string", "format": "binary"}}}}}}})
async def upload_case(shard_id: IdPath, case_id: CaseIdPath, request: Request, ident: WorkerDep, settings: SettingsDep):
    out_max = int(settings.output_max_bytes)
    async with _worker_upload(request, settings) as (raw, output):
        if output is not None and output.size is not None and output.size > out_max:
            raise ApiError(413, "too_large", f"the output file is larger than {out_max} bytes (SEGARENA_OUTPUT_MAX_BYTES)")
        return await run_in_threadpool(_store_case, settings, ident, shard_id, case_id, raw, output,
                                       int(settings.worker_meta_max_bytes))


@asynccontextmanager
async def _worker_upload(request: Request, settings) -> AsyncIterator[tuple[bytes, UploadFile | None]]:
    """The worker's multipart upload (a case's or an iteration's): ``(meta bytes, output file part or None)``, the
    body bounded while it streams in (output limit + meta limit + overhead: 413), the meta part by its own limit
    (413), anything but multipart with one ``meta`` field and at most one ``output`` file refused (422). The parsed
    form (its spooled file) is closed on exit."""
    out_max = int(settings.output_max_bytes)
    meta_max = int(settings.worker_meta_max_bytes)
    limit = out_max + meta_max + _MULTIPART_OVERHEAD
    too_large = (f"the upload is larger than the output limit ({out_max} bytes, SEGARENA_OUTPUT_MAX_BYTES) plus "
                 f"the meta part ({meta_max} bytes, SEGARENA_WORKER_META_MAX_BYTES)")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(422, "invalid_request", "send multipart/form-data with a 'meta' part (JSON) and an optional "
                       "'output' file part")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", too_large)
    received = 0
    receive = request.receive

    async def bounded_receive():
        nonlocal received
        message = await receive()
        if message.get("type") == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise ApiError(413, "too_large", too_large)
        return message

    try:
        form = await Request(request.scope, bounded_receive).form(max_files=1, max_fields=1, max_part_size=meta_max)
    except StarletteHTTPException as exc:
        detail = str(exc.detail)
        if "maximum size" in detail:
            raise ApiError(413, "too_large", f"the meta part is larger than {meta_max} bytes "
                           "(SEGARENA_WORKER_META_MAX_BYTES)") from None
        raise ApiError(422, "invalid_request", f"malformed multipart body: {bound_text(detail, 300)}; send one 'meta' "
                       "field and at most one 'output' file") from None
    try:
        meta_part = form.get("meta")
        raw = await meta_part.read(meta_max + 1) if isinstance(meta_part, UploadFile) else (meta_part or "").encode()
        output = form.get("output")
        if output is not None and not isinstance(output, UploadFile):
            raise ApiError(422, "invalid_request", "'output' must be a file part")
        yield raw, output
    finally:
        await form.close()


def _parse_meta(raw: bytes, meta_max: int) -> CaseMeta:
    if not raw:
        raise ApiError(422, "invalid_request", "the 'meta' part is missing or empty: send the case's measurements as JSON")
    if len(raw) > meta_max:
        raise ApiError(413, "too_large", f"the meta part is larger than {meta_max} bytes (SEGARENA_WORKER_META_MAX_BYTES)")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(422, "invalid_request", f"meta: not valid JSON ({bound_text(str(exc), 200)})") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_request", "meta: expected a JSON object {lease, status, reason, runtime_s, …}")
    try:
        return CaseMeta.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:10])
        raise ApiError(422, "invalid_request", bound_text(f"meta: {problems}", 2000)) from None


def _stage_output(storage, settings, output: UploadFile) -> Path:
    """Copy the received output part to a host-local temporary file (this host's scratch), counting its bytes."""
    out_max = int(settings.output_max_bytes)
    tmp = storage.staging.scratch_dir() / f"case-output-{secrets.token_hex(8)}.npz.tmp"
    copied = 0
    output.file.seek(0)
    try:
        with open(tmp, "wb") as f:
            while block := output.file.read(1 << 20):
                copied += len(block)
                if copied > out_max:
                    raise ApiError(413, "too_large", f"the output file is larger than {out_max} bytes "
                                   "(SEGARENA_OUTPUT_MAX_BYTES)")
                f.write(block)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def output_key(run_id: int, case_id: str) -> str:
    """The object key of an uploaded case output (unique per upload; deleted once scored)."""
    return f"runs/{run_id}/{case_id}/output-{secrets.token_hex(8)}.npz"


def _store_case(settings, ident: WorkerIdentity, shard_id: int, case_id: str, raw: bytes, output: UploadFile | None,
                meta_max: int) -> UploadAnswer:
    """Record an uploaded case: checks (lease, cancel, case, duplicate), then the output becomes the object
    ``runs/<run>/<case>/output-<random>.npz`` (either backend; no database transaction is held while it is
    stored), then the CaseResult (lease checked again); an object that ends up unrecorded is deleted."""
    from .scoring import after_case, in_fail_fast_window, record_case

    meta = _parse_meta(raw, meta_max)
    storage = Storage.from_settings(settings)
    tmp = _stage_output(storage, settings, output) if output is not None and meta.status == "ok" else None
    key, recorded = "", False
    try:
        with session_scope(settings.database_url) as s:
            shard = shards.held_shard(s, ident, shard_id, meta.lease)
            if shards.shard_cancelled(s, shard):
                return UploadAnswer(cancel=True)
            if case_id not in (shard.case_ids or []):
                raise ApiError(404, "not_found", f"case {case_id!r} is not in shard {shard_id}")
            run_id = shard.run_id
            known = s.scalar(select(CaseResult.id).where(CaseResult.run_id == run_id, CaseResult.case_id == case_id))
            if known is not None:
                return UploadAnswer(cancel=False, duplicate=True, case_result_id=known)
        if tmp is not None:
            key = output_key(run_id, case_id)
            try:
                storage.move_in(key, tmp)
            except StorageError as exc:
                log.error("could not store the output of case %s of run %s as %s: %s", case_id, run_id, key, exc)
                key = ""
                raise ApiError(503, "storage_unavailable", "the server could not store the case output; send it "
                               "again shortly") from None
        with session_scope(settings.database_url) as s:
            shard = shards.held_shard(s, ident, shard_id, meta.lease)  # the lease may have moved meanwhile
            if shards.shard_cancelled(s, shard):
                return UploadAnswer(cancel=True)
            run = s.get_one(Run, shard.run_id)
            track = run.submission.track
            manifest, _root, index = load_testset(run.testset or track.testset, storage)
            case = index[case_id]
            in_window = in_fail_fast_window(manifest, int(track.fail_fast_cases or 0), case_id)
            meta_dict = meta.model_dump()
            params = meta_dict.get("container_params")
            if params is not None and len(json.dumps(params, default=str)) > 16 * 1024:
                meta_dict["container_params"] = None
            row = record_case(settings, shard=shard, case=case, meta=meta_dict, output_key=key,
                              worker_name=shard.worker_name, session=s)
            if row is None:
                known = s.scalar(select(CaseResult.id).where(CaseResult.run_id == run.id,
                                                             CaseResult.case_id == case_id))
                return UploadAnswer(cancel=False, duplicate=True, case_result_id=known)
            shard.heartbeat_at = utcnow()
            s.commit()
            recorded = True
            row_id, scored = row.id, row.scored
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if key and not recorded:
            try:
                storage.delete(key)
            except Exception as exc:
                log.warning("could not delete the unrecorded output %s: %s", key, exc)
    if not scored:
        try:
            shards.send_score(settings, row_id)
        except Exception as exc:
            log.warning("could not send the score task of case result %s: %s", row_id, exc)
        return UploadAnswer(cancel=False, case_result_id=row_id)  # the lease was checked (not cancelled) on recording
    after_case(settings, run_id, fail_fast=in_window)
    with session_scope(settings.database_url) as s:  # fail-fast or finishing may have just stopped the run
        shard = s.get_one(Shard, shard_id)
        cancel = shards.shard_cancelled(s, shard)
    return UploadAnswer(cancel=cancel, case_result_id=row_id)


# --------------------------------------------------------------------------------------------- interactive tracks


class IterationMeta(BaseModel):
    """An iteration upload's ``meta`` part (interactive tracks, docs/interactive.md)."""

    model_config = ConfigDict(extra="ignore")
    lease: Lease
    status: Literal[CASE_STATUSES]  # type: ignore[valid-type]
    reason: str = Field(default="", max_length=20_000)
    runtime_s: float = Field(default=0.0, ge=0, le=1e7, allow_inf_nan=False)
    wall_s: float | None = Field(default=None, ge=0, le=1e7, allow_inf_nan=False)
    budget_exceeded: bool = False


class NextPrompt(BaseModel):
    iteration: int
    labels: list[int] = Field(default_factory=list, description="the classes clicked, in the order of clicks")
    clicks: list[Any] = Field(description="per class (sorted labels), {fg: [[...], ...], bg: [[...], ...]}: every "
                                          "click so far, as CVPR25_iter_eval.py stores them")
    clicks_order: list[Any] = Field(description="per class, 'fg' / 'bg' / null per refinement so far")


class IterationAnswer(BaseModel):
    cancel: bool
    duplicate: bool = False
    iteration: int
    valid: bool = False
    status: str = ""
    reason: str = ""
    budget_exceeded: bool = False
    done: bool = Field(description="no further iteration: finish the case with its case upload")
    next: NextPrompt | None = None


@router.post("/shards/{shard_id}/cases/{case_id}/iterations/{iteration}", response_model=IterationAnswer,
             summary="Interactive tracks: upload one iteration's output; answers the next iteration's clicks",
             openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                 "type": "object", "required": ["meta"],
                 "properties": {"meta": {"type": "string", "description": "JSON: lease, status, reason, runtime_s, "
                                                                          "wall_s, budget_exceeded"},
                                "output": {"type": "string", "format": "binary"}}}}}}})
async def upload_iteration(shard_id: IdPath, case_id: CaseIdPath,
                           iteration: Annotated[int, PathParam(ge=0, le=1000)], request: Request, ident: WorkerDep,
                           settings: SettingsDep):
    """Lease holder only. The output (≤ the output limit) is validated and scored against the ground truth on this,
    the trusted side, the clicks of the next iteration simulated from it; nothing of it is kept. Idempotent per
    (case, iteration, lease): a repeat answers what the first got."""
    async with _worker_upload(request, settings) as (raw, output):
        return await run_in_threadpool(_store_iteration, settings, ident, shard_id, case_id, iteration, raw, output,
                                       int(settings.worker_meta_max_bytes))


def _store_iteration(settings, ident: WorkerIdentity, shard_id: int, case_id: str, iteration: int, raw: bytes,
                     output: UploadFile | None, meta_max: int) -> dict[str, Any]:
    from .interactive import record_iteration

    if not raw:
        raise ApiError(422, "invalid_request", "the 'meta' part is missing or empty: send the iteration's "
                       "measurements as JSON")
    if len(raw) > meta_max:
        raise ApiError(413, "too_large", f"the meta part is larger than {meta_max} bytes (SEGARENA_WORKER_META_MAX_BYTES)")
    try:
        meta = IterationMeta.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:10])
        raise ApiError(422, "invalid_request", bound_text(f"meta: {problems}", 2000)) from None
    storage = Storage.from_settings(settings)
    tmp = _stage_output(storage, settings, output) if output is not None and meta.status == "ok" else None
    try:
        return record_iteration(settings, ident, shard_id, case_id, iteration, meta.model_dump(), tmp)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------- organizer routes


class WorkerCreate(_Body):
    name: str = Field(min_length=1, max_length=100, pattern=WORKER_NAME_PATTERN)
    queues: list[Annotated[str, Field(max_length=32)]] = Field(min_length=1, max_length=16)


class WorkerCreated(BaseModel):
    id: int
    name: str
    queues: list[str]
    token: str = Field(description="shown once: store it on the execution host (SEGARENA_WORKER_TOKEN)")


class WorkerNodeOut(BaseModel):
    name: str
    host: str
    queues: list[str]
    kind: str
    cpu_model: str
    cores: int | None
    gpu_model: str
    docker_version: str
    calibration_s: float | None
    started_at: Any
    last_seen_at: Any
    cases_run: int


class WorkerOut(BaseModel):
    id: int
    name: str
    queues: list[str]
    revoked: bool
    created_at: Any
    cases_run: int
    nodes: list[WorkerNodeOut]


@admin_router.post("", status_code=201, response_model=WorkerCreated,
                   summary="Create a worker identity for execution hosts (its token is shown once)")
def create_worker(body: WorkerCreate, organizer: OrganizerDep, session: SessionDep, settings: SettingsDep):
    member, token = identity.create_worker(session, settings, actor=organizer, name=body.name, queues=body.queues)
    session.commit()
    return WorkerCreated(id=member.id, name=member.name, queues=identity.parse_queue_list(member.worker_queues),
                         token=token)


@admin_router.get("", response_model=list[WorkerOut],
                  summary="Worker identities with their hosts (last seen, calibration, cases run)")
def list_workers(organizer: OrganizerDep, session: SessionDep, settings: SettingsDep):
    return identity.list_workers(session, settings)


@admin_router.post("/{name}/revoke", response_model=WorkerOut, summary="Revoke a worker identity (all its tokens)")
def revoke_worker(name: NamePath, organizer: OrganizerDep, session: SessionDep, settings: SettingsDep):
    member = identity.revoke_worker(session, actor=organizer, name=name)
    session.commit()
    return next(w for w in identity.list_workers(session, settings) if w["id"] == member.id)
