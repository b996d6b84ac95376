"""Schemas of submissions, runs, case results and upload sessions: what each role may see is a type."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.params import UtcOut

from api.models import CaseStatus, RunState, SubmissionState, UploadState
from api.status.schemas import QueuePosition


class Progress(BaseModel):
    done: int = Field(description="Cases of the latest attempt with a result.")
    total: int = Field(description="Cases in the test set (0 until the worker has started).")
    by_status: dict[str, int] = Field(default_factory=dict)


class SubmissionPublic(BaseModel):
    id: int
    challenge: str
    track: str
    track_id: int
    team_id: int
    team: str
    member_id: int | None
    label: str
    state: SubmissionState
    reason: str
    attempt: int
    run_state: RunState | None
    progress: Progress
    archive_sha256: str
    archive_bytes: int
    image_id: str
    image_tag: str
    image_user: str
    reproduces_id: int | None
    is_baseline: bool
    excluded: bool
    exclusion_reason: str
    metric_profile: str
    dsc: float | None
    nsd: float | None
    runtime_s: float | None
    aggregates: dict[str, Any] = Field(default_factory=dict, description="The latest attempt's summary (per modality, etc.).")
    created_at: UtcOut
    updated_at: UtcOut
    finished_at: UtcOut | None
    note: str | None = Field(default=None,
                             description="Set when something needs the participant's attention, e.g. a delayed queue.")
    queue: QueuePosition | None = Field(default=None, description="While queued (GET /api/submissions/{id} only): its "
                                        "position in its queue and an estimate of the wait.")
    feedback: str = Field(default="full", description="What this view includes: full, summary or none (the track's "
                          "feedback policy for participants; organizers always get full).")
    feedback_note: str = Field(default="", description="One line saying what the feedback policy left out, if anything.")


class CaseResultPublic(BaseModel):
    case_id: str = Field(description="The case's id in the test set (its input file name without .npz).")
    case: str = Field(deprecated="use case_id (the one name of a case's id); case is kept for clients of 0.x",
                      description="Same as case_id (deprecated).")
    attempt: int
    modality: str
    size_class: str
    status: CaseStatus
    reason: str
    runtime_s: float | None
    peak_memory_bytes: int | None
    exit_code: int | None
    dsc: float | None = Field(description="None where the track's feedback policy withholds per-case scores.")
    nsd: float | None
    per_class: dict[str, Any]
    undefined: bool = Field(default=False, description="The case ran and its DSC is undefined under the track's "
                            "profile (cvpr24: a label of 1..max(gt) absent from both the ground truth and the "
                            "prediction; the 2024 reference's empty CSV field): dsc is null, the case is left out "
                            "of the means and the per-case ranks; not a failure.")
    # interactive tracks (None elsewhere, and where the feedback policy withholds per-case scores)
    dsc_auc: float | None = Field(default=None, description="Interactive tracks: DSC_AUC over the refinement "
                                  "iterations (CVPR25_iter_eval.py); dsc/nsd are then the final scores.")
    nsd_auc: float | None = None
    budget_exceeded: bool = Field(default=False, description="Interactive tracks: the class time budget stopped the "
                                  "case; it keeps its last valid prediction.")
    iterations: list[dict[str, Any]] | None = Field(default=None, description="Interactive tracks: per iteration "
                                                    "{iteration, status, valid, dsc, nsd, runtime_s, budget_exceeded}.")


class SubmissionResults(BaseModel):
    submission_id: int
    state: SubmissionState
    attempt: int
    metric_profile: str
    dsc: float | None
    nsd: float | None
    runtime_s: float | None
    aggregates: dict[str, Any]
    cases: list[CaseResultPublic] = Field(description="The latest attempt's per-case rows.")
    feedback: str = Field(default="full", description="What this view includes: full, summary or none (the track's "
                          "feedback policy for participants; organizers always get full).")
    feedback_note: str = Field(default="", description="One line saying what the feedback policy left out, if anything.")


class CaseLog(BaseModel):
    case_id: str = Field(description="The case's id in the test set (its input file name without .npz).")
    case: str = Field(deprecated="use case_id (the one name of a case's id); case is kept for clients of 0.x",
                      description="Same as case_id (deprecated).")
    status: CaseStatus
    reason: str
    exit_code: int | None = None
    stdout_tail: str
    stderr_tail: str


class SubmissionLogs(BaseModel):
    submission_id: int
    attempt: int
    run_state: RunState | None
    reason: str
    log_tail: str
    cases: list[CaseLog]
    truncated_to_chars: int
    feedback: str = Field(default="full", description="What this view includes: full, summary or none (the track's "
                          "feedback policy for participants; organizers always get full).")
    feedback_note: str = Field(default="", description="One line saying what the feedback policy left out, if anything.")


class RunAudit(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    attempt: int
    state: RunState
    reason: str
    queue: str
    requested_by: str
    task_id: str
    worker_host: str
    worker_pid: int | None
    docker_version: str
    cpu_model: str
    cpuset: str
    container_params: dict[str, Any]
    metric_profile: str
    testset: str
    cases_total: int
    created_at: UtcOut
    started_at: UtcOut | None
    heartbeat_at: UtcOut | None
    finished_at: UtcOut | None
    log_tail: str


class CaseResultAudit(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    run_id: int
    case_id: str
    modality: str
    size_class: str
    status: CaseStatus
    reason: str
    runtime_s: float
    cpu_s: float | None
    peak_memory_bytes: int | None
    exit_code: int | None
    dsc: float
    nsd: float
    per_class: dict[str, Any]
    stdout_tail: str
    stderr_tail: str
    created_at: UtcOut
    dsc_auc: float | None = None
    nsd_auc: float | None = None
    budget_exceeded: bool = False
    iterations: list[dict[str, Any]] | None = None  # interactive tracks: with the clicks each prediction produced


class AuditEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    at: UtcOut
    actor_member_id: int | None
    actor: str
    action: str
    target_type: str
    target_id: str
    details: dict[str, Any]


class SubmissionOrganizerView(SubmissionPublic):
    archive_path: str
    description: str
    runs: list[RunAudit]
    cases: list[CaseResultAudit]
    audit: list[AuditEventPublic]


class ExcludeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    excluded: bool = True
    reason: str = Field(default="", max_length=2000)


class BaselineRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    is_baseline: bool = True


class UploadCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: str = Field(default="image.tar.gz", min_length=1, max_length=255)
    total_bytes: int = Field(ge=1, le=1 << 50)
    label: str = Field(default="", max_length=200)
    reproduces: int | None = Field(default=None, ge=1, le=2**31 - 1)


class UploadPublic(BaseModel):
    upload_id: str
    url: str
    filename: str
    total_bytes: int
    received_bytes: int
    state: UploadState
    created_at: UtcOut
    submission_id: int | None = None
