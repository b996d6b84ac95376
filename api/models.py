"""SegArena's schema: SQLAlchemy 2 typed models. Alembic migrations are generated from these.

States and reasons (docs/architecture.md, "States"; transitions in docs/lifecycle.md): a Submission moves
``queued → loading → running → scoring → succeeded | failed | cancelled``; every attempt at running it
is a Run; every case of a Run is one CaseResult, unique per (run, case), so a redelivered task never
double-counts.
"""

from __future__ import annotations

import enum
from datetime import datetime, UTC
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy import text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from api.challenges import track_settings as ts
from api.challenges.track_settings import TRACK_DEFAULTS as _TD

__all__ = [
    "Base", "utcnow", "TrackKind", "Visibility", "RowPolicy", "Role", "SubmissionState", "RunState",
    "CaseStatus", "UploadState", "CaseIteration", "Challenge", "Track", "Team", "Member", "ApiToken", "Upload",
    "Submission", "Run", "CaseResult", "AuditEvent", "FINAL_STATES", "ShardState", "Shard", "Feedback", "WebSession",
    "WorkerNode",
    "Webhook", "NotificationEvent", "NotificationDelivery", "Signup", "SignupState", "TermsAcceptance",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: DateTime(timezone=True), dict[str, Any]: JSON,
                                                     list[Any]: JSON}


def _enum(cls: type[enum.Enum]) -> SAEnum:
    return SAEnum(cls, native_enum=False, length=32, values_callable=lambda e: [m.value for m in e])


class TrackKind(str, enum.Enum):
    main = "main"
    booster = "booster"
    reproducibility = "reproducibility"
    interactive = "interactive"  # per case: the box (or point) prompt, then K simulated-click refinements


class Visibility(str, enum.Enum):
    public = "public"
    hidden = "hidden"
    frozen = "frozen"


class RowPolicy(str, enum.Enum):
    best = "best"
    latest = "latest"


class Role(str, enum.Enum):
    participant = "participant"
    organizer = "organizer"
    worker = "worker"  # an execution host: reaches only /api/worker/ routes


class ShardState(str, enum.Enum):
    queued = "queued"  # waiting for a worker (one broker message each)
    running = "running"  # held by one worker (lease), heartbeating
    done = "done"  # every case uploaded (scoring may still be under way)
    cancelled = "cancelled"  # the submission was cancelled, or the run stopped early
    lost = "lost"  # the worker died or stopped heartbeating: requeued as a new lease


class SubmissionState(str, enum.Enum):
    queued = "queued"
    loading = "loading"
    running = "running"
    scoring = "scoring"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


FINAL_STATES = frozenset({SubmissionState.succeeded, SubmissionState.failed, SubmissionState.cancelled})


class RunState(str, enum.Enum):
    queued = "queued"
    loading = "loading"
    running = "running"
    scoring = "scoring"
    succeeded = "succeeded"
    failed = "failed"  # participant failure: final
    infra_failed = "infra_failed"  # infrastructure failure: retried as a new attempt
    cancelled = "cancelled"


class CaseStatus(str, enum.Enum):
    ok = "ok"
    timeout = "timeout"
    oom = "oom"
    crash = "crash"
    no_output = "no_output"
    invalid_output = "invalid_output"


class UploadState(str, enum.Enum):
    open = "open"
    complete = "complete"
    aborted = "aborted"


class Feedback(str, enum.Enum):
    """What participants learn about their own runs on a track (organizers always see everything)."""

    full = "full"  # per-case scores and log tails (validation phases)
    summary = "summary"  # overall and per-modality scores, per-case status and the cap that stopped it
    none = "none"  # state only, until the board is published


class Challenge(Base):
    __tablename__ = "challenges"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # a demo challenge may use the built-in synthetic sets, whose ground truth is public (public seed)
    demo: Mapped[bool] = mapped_column(Boolean, default=False)
    # participants (api/participants): anonymous sign-up requests, terms to accept before the first submission
    # ("" = none), and the most members a team may have (None = no limit), checked on join and approval
    signup_open: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    terms: Mapped[str] = mapped_column(Text, default="", server_default="")
    max_team_size: Mapped[int | None] = mapped_column(Integer, default=None, nullable=True)

    tracks: Mapped[list[Track]] = relationship(back_populates="challenge", order_by="Track.id")


class Track(Base):
    __tablename__ = "tracks"
    __table_args__ = (UniqueConstraint("challenge_id", "slug"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    challenge_id: Mapped[int] = mapped_column(ForeignKey("challenges.id", ondelete="CASCADE"), index=True)
    slug: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    kind: Mapped[TrackKind] = mapped_column(_enum(TrackKind), default=TrackKind(_TD["kind"]))
    description: Mapped[str] = mapped_column(Text, default=_TD["description"])
    # test set: a built-in name ("micro", "tiny", "small") or a path to a manifest JSON
    testset: Mapped[str] = mapped_column(String(500), default=_TD["testset"])
    metric_profile: Mapped[str] = mapped_column(String(32), default=_TD["metric_profile"])
    ranking_scheme: Mapped[str] = mapped_column(String(32), default=_TD["ranking_scheme"])
    row_policy: Mapped[RowPolicy] = mapped_column(_enum(RowPolicy), default=RowPolicy(_TD["row_policy"]))
    visibility: Mapped[Visibility] = mapped_column(_enum(Visibility), default=Visibility(_TD["visibility"]))
    opens_at: Mapped[datetime | None] = mapped_column(default=None)
    closes_at: Mapped[datetime | None] = mapped_column(default=None)
    frozen_at: Mapped[datetime | None] = mapped_column(default=None)
    quota_per_day: Mapped[int] = mapped_column(Integer, default=_TD["quota_per_day"])
    # resource profile
    queue: Mapped[str] = mapped_column(String(16), default=_TD["queue"])
    cpus: Mapped[float] = mapped_column(Float, default=_TD["cpus"])
    memory_mb: Mapped[int] = mapped_column(Integer, default=_TD["memory_mb"])
    gpus: Mapped[int] = mapped_column(Integer, default=_TD["gpus"])
    case_timeout_s: Mapped[int] = mapped_column(Integer, default=_TD["case_timeout_s"])
    total_timeout_s: Mapped[int] = mapped_column(Integer, default=_TD["total_timeout_s"])
    pids_limit: Mapped[int] = mapped_column(Integer, default=_TD["pids_limit"])
    tmpfs_mb: Mapped[int] = mapped_column(Integer, default=_TD["tmpfs_mb"])
    allow_root: Mapped[bool] = mapped_column(Boolean, default=_TD["allow_root"])
    # reproducibility margins
    repro_margin_dsc: Mapped[float] = mapped_column(Float, default=_TD["repro_margin_dsc"])
    repro_margin_nsd: Mapped[float] = mapped_column(Float, default=_TD["repro_margin_nsd"])
    feedback: Mapped[Feedback] = mapped_column(_enum(Feedback), default=Feedback(_TD["feedback"]))
    # an upload begun before closes_at may complete up to this long after it
    upload_grace_s: Mapped[int] = mapped_column(Integer, default=_TD["upload_grace_s"])
    # a run stops early when its first K cases all fail by the participant's fault (0: never)
    fail_fast_cases: Mapped[int] = mapped_column(Integer, default=_TD["fail_fast_cases"])
    # cases per shard (fan-out unit); 0 = auto: about shard_target_s of work from recent case times
    shard_size: Mapped[int] = mapped_column(Integer, default=_TD["shard_size"])
    # prompts given to the model (api/challenges/track_settings.py): box | point | box+point
    prompt: Mapped[str] = mapped_column(String(16), default=ts.DEFAULT_PROMPT, server_default=ts.DEFAULT_PROMPT)
    # interactive tracks: refinement iterations after the first prompt, and the time budget per class (seconds,
    # summed over all iterations of a case)
    iterations: Mapped[int] = mapped_column(Integer, default=ts.DEFAULT_ITERATIONS,
                                            server_default=str(ts.DEFAULT_ITERATIONS))
    class_budget_s: Mapped[float] = mapped_column(Float, default=ts.DEFAULT_CLASS_BUDGET_S,
                                                  server_default=f"{ts.DEFAULT_CLASS_BUDGET_S:g}")
    # what runtime measures: container (start to exit) or docker_run (create + start + remove, the 2024 script's span)
    timing: Mapped[str] = mapped_column(String(16), default=ts.DEFAULT_TIMING, server_default=ts.DEFAULT_TIMING)
    # compute budget per team on this track (api/accounting): container CPU-seconds and GPU-seconds; null = none
    budget_cpu_s: Mapped[float | None] = mapped_column(Float, default=None, nullable=True)
    budget_gpu_s: Mapped[float | None] = mapped_column(Float, default=None, nullable=True)

    challenge: Mapped[Challenge] = relationship(back_populates="tracks")


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    affiliation: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # lets a newcomer ask to join this team when signing up (an organizer still approves); its members see and
    # rotate it (api/participants). Not a credential: it grants nothing by itself
    join_code: Mapped[str | None] = mapped_column(String(32), default=None, nullable=True, unique=True)

    members: Mapped[list[Member]] = relationship(back_populates="team")


class Member(Base):
    __tablename__ = "members"

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[Role] = mapped_column(_enum(Role), default=Role.participant)
    # for role=worker: comma-separated queues this execution host may serve
    worker_queues: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # e-mail notifications about the team's runs (api/notifications); the member can turn them off
    email_notifications: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))

    team: Mapped[Team | None] = relationship(back_populates="members")
    tokens: Mapped[list[ApiToken]] = relationship(back_populates="member")


class ApiToken(Base):
    """An API token: shown once at creation, only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    # the token that minted this one: revoking it revokes this one too (no token outlives its parent)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"), default=None, index=True)

    member: Mapped[Member] = relationship(back_populates="tokens")


class Upload(Base):
    """A resumable upload session of an image archive (Content-Range chunks)."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    track_id: Mapped[int] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255), default="image.tar.gz")
    total_bytes: Mapped[int] = mapped_column(BigInteger)
    received_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[UploadState] = mapped_column(_enum(UploadState), default=UploadState.open)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Submission(Base):
    __tablename__ = "submissions"
    __table_args__ = (Index("ix_submissions_track_team", "track_id", "team_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    track_id: Mapped[int] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"), index=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"))
    label: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[SubmissionState] = mapped_column(_enum(SubmissionState), default=SubmissionState.queued, index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    # the archive as uploaded
    archive_path: Mapped[str] = mapped_column(String(500))
    archive_sha256: Mapped[str] = mapped_column(String(64))
    archive_bytes: Mapped[int] = mapped_column(BigInteger)
    # the image inside it (config digest, "sha256:...") and its tag
    image_id: Mapped[str] = mapped_column(String(80), index=True)
    image_tag: Mapped[str] = mapped_column(String(300), default="")
    image_user: Mapped[str] = mapped_column(String(64), default="")
    reproduces_id: Mapped[int | None] = mapped_column(ForeignKey("submissions.id", ondelete="SET NULL"))
    is_baseline: Mapped[bool] = mapped_column(Boolean, default=False)
    excluded: Mapped[bool] = mapped_column(Boolean, default=False)
    exclusion_reason: Mapped[str] = mapped_column(Text, default="")
    # the latest attempt's aggregates (filled when it succeeds)
    dsc: Mapped[float | None] = mapped_column(Float, default=None)
    nsd: Mapped[float | None] = mapped_column(Float, default=None)
    runtime_s: Mapped[float | None] = mapped_column(Float, default=None)
    # the latest attempt's run aggregates (overall, per modality, per size class, counts); the API's ``aggregates``
    aggregates: Mapped[dict[str, Any]] = mapped_column("summary", default=dict)  # the column keeps its first name
    metric_profile: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    cancelled_at: Mapped[datetime | None] = mapped_column(default=None)
    # the archive was deleted (cancelled or failed, after the retention period); nothing can rerun it
    archive_deleted_at: Mapped[datetime | None] = mapped_column(default=None)

    track: Mapped[Track] = relationship()
    team: Mapped[Team] = relationship()
    runs: Mapped[list[Run]] = relationship(back_populates="submission", order_by="Run.attempt")
    reproduces: Mapped[Submission | None] = relationship(remote_side="Submission.id")


class Run(Base):
    """One attempt at running a submission, with everything needed to audit it."""

    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("submission_id", "attempt"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[RunState] = mapped_column(_enum(RunState), default=RunState.queued, index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    queue: Mapped[str] = mapped_column(String(16), default="cpu")
    requested_by: Mapped[str] = mapped_column(String(100), default="")
    task_id: Mapped[str] = mapped_column(String(64), default="")
    worker_host: Mapped[str] = mapped_column(String(200), default="")
    worker_pid: Mapped[int | None] = mapped_column(Integer, default=None)
    docker_version: Mapped[str] = mapped_column(String(100), default="")
    cpu_model: Mapped[str] = mapped_column(String(200), default="")
    cpuset: Mapped[str] = mapped_column(String(100), default="")
    container_params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metric_profile: Mapped[str] = mapped_column(String(32), default="")
    testset: Mapped[str] = mapped_column(String(200), default="")
    # the per-case time limit this attempt runs under (the track's when the run was created): its shards are
    # executed with it, and its failed cases are charged it (evaluator.failures); NULL on runs made before
    case_timeout_s: Mapped[float | None] = mapped_column(Float, default=None)
    cases_total: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    log_tail: Mapped[str] = mapped_column(Text, default="")

    submission: Mapped[Submission] = relationship(back_populates="runs")
    cases: Mapped[list[CaseResult]] = relationship(back_populates="run", order_by="CaseResult.id")


class CaseResult(Base):
    __tablename__ = "case_results"
    __table_args__ = (UniqueConstraint("run_id", "case_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    case_id: Mapped[str] = mapped_column(String(200))
    modality: Mapped[str] = mapped_column(String(32), default="")
    size_class: Mapped[str] = mapped_column(String(16), default="")
    status: Mapped[CaseStatus] = mapped_column(_enum(CaseStatus))
    reason: Mapped[str] = mapped_column(Text, default="")
    runtime_s: Mapped[float] = mapped_column(Float, default=0.0)
    cpu_s: Mapped[float | None] = mapped_column(Float, default=None)
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    # NULL on an ok case: the score is undefined (cvpr24: a label of 1..gt.max() absent from both masks, the 2024
    # reference's empty CSV field); left out of means and per-case ranks, shown "undefined" (docs/interactive.md)
    dsc: Mapped[float | None] = mapped_column(Float, default=0.0, nullable=True)
    nsd: Mapped[float | None] = mapped_column(Float, default=0.0, nullable=True)
    per_class: Mapped[dict[str, Any]] = mapped_column(default=dict)
    stdout_tail: Mapped[str] = mapped_column(Text, default="")
    stderr_tail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # scale-out: which worker ran it, from which shard, the case's wall time on the worker (download, container,
    # upload), and whether the trusted scorer has scored it yet (an uploaded output waits under output_key)
    worker_name: Mapped[str] = mapped_column(String(200), default="")
    shard_id: Mapped[int | None] = mapped_column(ForeignKey("shards.id", ondelete="SET NULL"), default=None, index=True)
    wall_s: Mapped[float | None] = mapped_column(Float, default=None)
    output_key: Mapped[str] = mapped_column(String(500), default="")
    scored: Mapped[bool] = mapped_column(Boolean, default=True)
    # interactive tracks: one entry per iteration ({iteration, status, valid, dsc, nsd, runtime_s, clicks, reason}),
    # the AUCs over iterations, and whether the per-class time budget stopped the case (it keeps its last valid
    # prediction); the final DSC/NSD are ``dsc``/``nsd``, the total runtime ``runtime_s``
    iterations: Mapped[list[Any] | None] = mapped_column(JSON, default=None, nullable=True)
    dsc_auc: Mapped[float | None] = mapped_column(Float, default=None, nullable=True)
    nsd_auc: Mapped[float | None] = mapped_column(Float, default=None, nullable=True)
    budget_exceeded: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))

    run: Mapped[Run] = relationship(back_populates="cases")


class Shard(Base):
    """A slice of a run's cases, executed by one execution host at a time (fan-out over the track's queue).

    A worker holds a shard through a lease (``lease``, a random id given at claim); results for a shard are
    accepted only from the lease holder. A lost shard gets a new lease and a new message; case results stay
    unique per (run, case), so a redelivered shard never counts a case twice."""

    __tablename__ = "shards"
    __table_args__ = (UniqueConstraint("run_id", "index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    case_ids: Mapped[list[Any]] = mapped_column(default=list)
    state: Mapped[ShardState] = mapped_column(_enum(ShardState), default=ShardState.queued, index=True)
    queue: Mapped[str] = mapped_column(String(16), default="cpu")
    lease: Mapped[str] = mapped_column(String(64), default="")
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
    worker_name: Mapped[str] = mapped_column(String(200), default="")
    task_id: Mapped[str] = mapped_column(String(64), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

    run: Mapped[Run] = relationship()


class CaseIteration(Base):
    """One iteration of an interactive case while it runs (trusted side): the metrics of the prediction in effect
    after it and the clicks simulated from that prediction (the next iteration's new prompts). Keyed by the shard's
    lease: a requeued shard starts the case again. Folded into ``CaseResult.iterations`` when the case is recorded,
    then deleted."""

    __tablename__ = "case_iterations"
    __table_args__ = (UniqueConstraint("run_id", "case_id", "iteration"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    case_id: Mapped[str] = mapped_column(String(200))
    iteration: Mapped[int] = mapped_column(Integer)
    lease: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(32), default="ok")
    valid: Mapped[bool] = mapped_column(Boolean, default=False)  # this iteration's own output was valid
    reason: Mapped[str] = mapped_column(Text, default="")
    runtime_s: Mapped[float] = mapped_column(Float, default=0.0)
    dsc: Mapped[float | None] = mapped_column(Float, default=None, nullable=True)
    nsd: Mapped[float | None] = mapped_column(Float, default=None, nullable=True)
    per_class: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # the clicks simulated from the prediction in effect after this iteration (given to the next one), and the
    # sha256 of that prediction ("" = none yet: zeros)
    clicks: Mapped[list[Any]] = mapped_column(default=list)
    prediction_sha256: Mapped[str] = mapped_column(String(64), default="")
    budget_exceeded: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"))
    actor: Mapped[str] = mapped_column(String(200), default="system")
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(32), default="")
    target_id: Mapped[str] = mapped_column(String(64), default="")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class WebSession(Base):
    """A signed-in browser (organizer pages): the cookie holds a random session id, never an API token."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class WorkerNode(Base):
    """A worker process that announced itself: which queues it serves, where, and when it was last seen."""

    __tablename__ = "worker_nodes"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    queues: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(8), default="cpu")
    host: Mapped[str] = mapped_column(String(200), default="")
    pid: Mapped[int | None] = mapped_column(Integer, default=None)
    cpu_model: Mapped[str] = mapped_column(String(200), default="")
    cores: Mapped[int | None] = mapped_column(Integer, default=None)
    calibration_s: Mapped[float | None] = mapped_column(Float, default=None)
    gpu_model: Mapped[str] = mapped_column(String(200), default="")
    docker_version: Mapped[str] = mapped_column(String(100), default="")
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"), default=None)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Webhook(Base):
    """An organizer's webhook of a challenge (api/notifications): signed POSTs of the chosen event kinds.
    ``secret`` signs the bodies (HMAC-SHA256); it is shown once, when the webhook is added, and never again."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    challenge_id: Mapped[int] = mapped_column(ForeignKey("challenges.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(128))
    events: Mapped[list[Any]] = mapped_column(default=list)  # event kinds; empty: all
    description: Mapped[str] = mapped_column(String(200), default="")
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(default=None)


class NotificationEvent(Base):
    """Outbox marker: the audit event ``event_id`` was turned into its deliveries (once: the primary key)."""

    __tablename__ = "notification_events"

    event_id: Mapped[int] = mapped_column(ForeignKey("audit_events.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    challenge_id: Mapped[int | None] = mapped_column(ForeignKey("challenges.id", ondelete="CASCADE"), default=None)
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
    dispatched_at: Mapped[datetime] = mapped_column(default=utcnow)


class NotificationDelivery(Base):
    """One notification of one event to one target (a webhook or a member's e-mail address), with its attempts:
    unique per (event, target), so an event reaches a target at most once however many dispatchers run."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (UniqueConstraint("event_id", "target", name="uq_notification_delivery_target"),
                      Index("ix_notification_deliveries_due", "state", "next_attempt_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("audit_events.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(16))  # webhook | email
    target: Mapped[str] = mapped_column(String(64))  # webhook:<id> | email:<member id>
    webhook_id: Mapped[int | None] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"), default=None,
                                                   index=True)
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"), default=None)
    challenge_id: Mapped[int | None] = mapped_column(ForeignKey("challenges.id", ondelete="CASCADE"), default=None,
                                                     index=True)
    recipient: Mapped[str] = mapped_column(String(2000), default="")  # the URL or the e-mail address
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending|delivered|failed|cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease: Mapped[str] = mapped_column(String(64), default="")
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    last_status: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str] = mapped_column(Text, default="")
    log: Mapped[list[Any]] = mapped_column(default=list)  # one entry per attempt: at, status, error, duration
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)


class SignupState(str, enum.Enum):
    pending = "pending"
    approved = "approved"
    refused = "refused"


class Signup(Base):
    """An anonymous request to take part in a challenge (api/participants): a new team, or joining a team by its
    join code. An organizer approves (the member, and the team if new, are created then) or refuses it. The
    requester holds a claim code, shown once at registration; only its SHA-256 is stored. After approval the claim
    code is exchanged, once, for the member's first API token (minted then, shown once, stored as a hash)."""

    __tablename__ = "signups"
    __table_args__ = (Index("ix_signups_client_created", "client", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    challenge_id: Mapped[int] = mapped_column(ForeignKey("challenges.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(200))
    affiliation: Mapped[str] = mapped_column(String(200), default="")
    team_name: Mapped[str] = mapped_column(String(100), default="")  # a new team (empty when joining one)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), default=None, nullable=True)
    state: Mapped[SignupState] = mapped_column(_enum(SignupState), default=SignupState.pending, index=True)
    reason: Mapped[str] = mapped_column(Text, default="")  # the organizer's reason for a refusal
    claim_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client: Mapped[str] = mapped_column(String(64), default="")  # the requesting address (rate limit)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(default=None, nullable=True)
    decided_by: Mapped[str] = mapped_column(String(200), default="")
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"), default=None,
                                                  nullable=True)
    claim_expires_at: Mapped[datetime | None] = mapped_column(default=None, nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(default=None, nullable=True)
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id", ondelete="SET NULL"), default=None,
                                                 nullable=True)


class TermsAcceptance(Base):
    """A member accepted a challenge's terms, as they read when accepted (their SHA-256): changed terms need a new
    acceptance before the next submission."""

    __tablename__ = "terms_acceptances"
    __table_args__ = (UniqueConstraint("member_id", "challenge_id", "terms_sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    challenge_id: Mapped[int] = mapped_column(ForeignKey("challenges.id", ondelete="CASCADE"), index=True)
    terms_sha256: Mapped[str] = mapped_column(String(64))
    accepted_at: Mapped[datetime] = mapped_column(default=utcnow)
