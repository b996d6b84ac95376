"""The one settings object of SegArena, read by the API, Alembic, the worker and the CLI.

Every value comes from an environment variable with the prefix ``SEGARENA_`` (or a ``.env`` file);
nothing else in the code base hard-codes a URL or a path.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


# The base of the project's own images (tests, examples, demo): built locally by scripts/build-base-image.sh (its
# tag is also in scripts/lib.sh); python:3.11-slim where a registry is reachable.
DEFAULT_BASE_IMAGE = "segarena/base:bookworm-slim"

class Settings(BaseSettings):
    """SegArena configuration (environment prefix ``SEGARENA_``)."""

    model_config = SettingsConfigDict(env_prefix="SEGARENA_", env_file=".env", extra="ignore",
                                      populate_by_name=True)  # queue_spec is read from SEGARENA_QUEUES

    data_dir: Path = Field(
        default_factory=lambda: Path.cwd() / ".segarena",
        description="Where embedded mode keeps its SQLite database, broker and storage.",
    )
    database_url: str = Field(
        default="", description="SQLAlchemy URL; default: SQLite file under data_dir."
    )
    broker_url: str = Field(
        default="",
        description="Celery broker; default: embedded SQLite broker under data_dir (no server). "
        "Production: redis://host:6379/0",
    )
    storage_dir: Path | None = Field(default=None, description="Default: data_dir/storage.")
    storage_url: str = Field(
        default="",
        description="Where archives and run outputs are kept: empty (default) or file:///path: the local directory "
        "storage_dir (file:///path sets it); s3://bucket/prefix: S3-compatible object storage (MinIO, S3, Ceph) with "
        "the SEGARENA_S3_* settings, storage_dir then keeping only this host's working files (upload staging, scratch).",
    )
    s3_endpoint_url: str = Field(
        default="", description="S3-compatible server, e.g. http://minio:9000; empty: AWS S3 of s3_region.")
    s3_region: str = Field(default="us-east-1", description="Region of the S3 bucket (MinIO: any, e.g. us-east-1).")
    s3_access_key_id: str = Field(default="", description="S3 access key; empty: boto3's own chain (env, profile, role).")
    s3_secret_access_key: SecretStr = Field(
        default=SecretStr(""), description="S3 secret key (never shown: /health and logs redact it).")
    s3_part_bytes: int = Field(
        default=8 * 1024**2, ge=5 * 1024**2, le=5 * 1024**3,
        description="Part size of multipart uploads to S3; one upload's peak memory is about 6 x this (measured: "
        "48-95 MiB at 8-16 MiB); at most 10,000 parts per object, so objects up to 10,000 x this (80 GiB at 8 MiB).",
    )
    docker_host: str | None = Field(
        default=None,
        description="Docker engine socket, e.g. unix:///var/run/docker.sock; default: DOCKER_HOST or the local socket.",
    )
    max_upload_bytes: int = Field(default=10 * 1024**3, description="Largest image archive accepted (bytes).")
    upload_chunk_bytes: int = Field(default=8 * 1024**2, description="Write size when streaming uploads to storage.")
    max_body_bytes: int = Field(
        default=2 * 1024**2, ge=1024,
        description="Largest request body of any route except the archive uploads (JSON, forms), enforced while "
        "reading, before parsing and authentication: a declared Content-Length over it is refused at once (413), "
        "a chunked body is cut off at it. The largest legitimate body, a challenge spec at its field limits, is under 2 MiB.",
    )
    archive_max_members: int = Field(
        default=4096, ge=16,
        description="Most tar entries an image archive may have (a docker save archive has about 5 per layer, "
        "and an image at most 127 layers); "
        "checked as the archive streams in, so millions of empty members cost nothing.",
    )
    archive_max_metadata_bytes: int = Field(
        default=8 * 1024**2, ge=64 * 1024,
        description="Most bytes of tar headers in an image archive: 512-byte header blocks plus pax and GNU "
        "long-name headers (each of those at most 64 KiB).",
    )
    archive_max_json_bytes: int = Field(
        default=4 * 1024**2, ge=64 * 1024,
        description="Largest image config JSON parsed from an archive (manifest.json: at most 1 MiB).",
    )
    archive_max_inflate_ratio: int = Field(
        default=100, ge=2,
        description="A gzip archive may unpack to at most this many bytes per compressed byte, judged once it has "
        "unpacked 1 GiB (real images compress 2-5x).",
    )
    base_image: str = Field(default=DEFAULT_BASE_IMAGE, description="Base image of the project's own images.")
    queue_spec: str = Field(
        default="cpu:cpu,gpu:gpu", validation_alias="SEGARENA_QUEUES",
        description="SEGARENA_QUEUES: the queues tracks may name, declared once as name:kind pairs (kind cpu or gpu), "
        "e.g. 'cpu:cpu,gpu:gpu,big:cpu'. The API refuses a track on any other queue; a worker serves declared "
        "queues of its kind only.",
    )
    worker_queues: str = Field(
        default="", description="Comma-separated declared queues this worker consumes; default: every declared "
        "queue of its kind (gpu-kind when SEGARENA_WORKER_GPUS is set, else cpu-kind).")
    worker_heartbeat_s: float = Field(default=15.0, gt=0, description="How often an execution host pings the API "
                                      "(POST /api/worker/ping; read by the host from its own environment); keep it "
                                      "below SEGARENA_WORKER_ONLINE_S.")
    worker_online_s: float = Field(default=60.0, gt=0, description="A worker seen within this many seconds counts as "
                                   "online in GET /api/status and the /status page.")
    worker_cpus: str = Field(default="", description="CPU set this worker may pin containers to, e.g. '0-1'; default: all.")
    worker_gpus: str = Field(default="", description="GPU ids this worker owns, e.g. '0'.")
    output_max_bytes: int = Field(
        default=2 * 1024**3, ge=1024,
        description="Bound of a case container's outputs/ directory: disk bytes written and apparent (sparse) size; "
        "past it the container is stopped and the case is invalid_output.",
    )
    output_max_files: int = Field(
        default=16, ge=1,
        description="Most entries (files, directories, links) a case container may create in outputs/; past it the "
        "container is stopped and the case is invalid_output.",
    )
    keep_case_outputs: bool = Field(
        default=False,
        description="Keep each case's outputs/ in storage after scoring (debugging); by default it is deleted as "
        "soon as the case is scored (the scores, logs and measurements are in the database).",
    )
    reason_max_chars: int = Field(
        default=2000, ge=200,
        description="Longest failure reason (case, run, submission) and run log summary the worker stores; longer "
        "text is cut with a note of how much was cut.",
    )
    heartbeat_timeout_s: int = Field(default=120,
                                     description="A run whose heartbeat is older than this is requeued by the reaper.")
    reaper_interval_s: int = Field(default=30, description="How often the reaper looks for lost runs.")
    max_attempts: int = Field(default=3, description="Attempts for infrastructure failures before a run fails for good.")
    retry_backoff_s: float = Field(default=5.0, description="Backoff before attempt n: retry_backoff_s * 2**(n-2) seconds.")
    requeue_after_s: int | None = Field(
        default=None, description="A queued run nobody picked up is re-sent after this long; default: heartbeat_timeout_s."
    )
    upload_state_cache_bytes: int = Field(
        default=64 * 1024**2, ge=0,
        description="Memory one API process keeps, over all open resumable upload sessions together, for their "
        "running hash and archive check between chunks; sessions beyond it (least recently used first) keep only "
        "their bytes on disk and are re-read once on completion. 0: keep none.",
    )
    max_open_uploads_per_team: int = Field(
        default=2, ge=0,
        description="Resumable upload sessions a team may have open at once (over all tracks); each open session "
        "also holds one slot of its track's daily quota until it completes, is deleted or expires.",
    )
    upload_stale_after_s: int = Field(
        default=6 * 3600, ge=60,
        description="An open upload session that received no chunk for this long is expired by the reaper: its "
        "bytes are deleted and its quota slot freed (it stops holding a slot already at this age).",
    )
    max_free_cancels_per_day: int = Field(
        default=2, ge=0,
        description="Cancellations before the run started that a team gets refunded (not counted toward the quota) "
        "per rolling 24 h; further cancelled submissions count, as do those whose run had started.",
    )
    archive_retention_h: float = Field(
        default=24.0, ge=0,
        description="Hours the image archive of a cancelled or failed submission is kept before the reaper deletes "
        "it (0: at the next pass); archives of succeeded submissions are kept.",
    )
    public_base_url: str = Field(default="http://127.0.0.1:8000", description="Where the API is reachable.")
    leaderboard_cache_entries: int = Field(
        default=256, ge=1,
        description="Rendered leaderboard responses (page, JSON, CSV per track and audience, and the challenge "
        "overview pages) one API process keeps, least recently used evicted first; built boards are bounded the "
        "same. Only existing tracks and challenges are cached: a 404 is never cached.",
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0,
        description="`segarena serve`: a connection whose request head (request line and headers) is not complete "
        "this many seconds after the connection opened or the previous response was sent is closed (slowloris).",
    )
    max_connections: int = Field(
        default=1000, ge=1,
        description="`segarena serve`: concurrent connections and requests one API process accepts; beyond it "
        "uvicorn answers 503 at once.",
    )
    bootstrap_organizer_token: str | None = Field(
        default=None, description="If set, an organizer with this token is created at start-up (demo, first install)."
    )
    web_session_hours: float = Field(
        default=12.0, gt=0, le=24 * 30,
        description="How long an organizer-page sign-in (a server-side web session) lasts before signing in again.",
    )
    trust_proxy_headers: bool = Field(
        default=False,
        description="Trust X-Forwarded-Proto/X-Forwarded-Host from the reverse proxy in front of the API: the "
        "session cookie is then marked Secure when the proxy says https. Turn on only behind a proxy that sets them.",
    )
    # ---- participants (api/participants): anonymous sign-up requests and their one-time claim codes
    signup_per_hour: int = Field(
        default=5, ge=0, le=10000,
        description="Sign-up requests one client address may send per rolling hour (0: no anonymous sign-up); "
        "claim-code look-ups are limited to 120 per hour per address.")
    signup_max_pending: int = Field(
        default=500, ge=1, le=1_000_000,
        description="Pending sign-up requests a challenge holds at most; beyond, new requests wait (429) until an "
        "organizer decides some.")
    signup_claim_days: float = Field(
        default=14.0, gt=0, le=365,
        description="How long after approval the requester's one-time claim code can fetch the first API token; "
        "afterwards an organizer issues one (segarena admin token new MEMBER_ID).")

    # ---- notifications (api/notifications): webhooks and e-mail on run finished / failed / stuck, submission excluded
    smtp_host: str = Field(
        default="", description="SMTP server for e-mail notifications; empty (default): no e-mail is sent.")
    smtp_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="SMTP port; default by SEGARENA_SMTP_TLS: 465 for tls, 587 for starttls, 25 for none.")
    smtp_tls: Literal["none", "starttls", "tls"] = Field(
        default="starttls",
        description="How the SMTP connection is protected: starttls (upgrade, refused if the server does not offer "
        "it), tls (implicit TLS, usually port 465) or none (plain text; only to a relay on a trusted network).")
    smtp_user: str = Field(default="", description="SMTP login; empty: no authentication.")
    smtp_password: SecretStr = Field(
        default=SecretStr(""), description="SMTP password (never shown: /health and logs redact it).")
    smtp_sender: str = Field(
        default="", description="From address of notification e-mails, e.g. 'SegArena <noreply@example.org>'; "
        "required when SEGARENA_SMTP_HOST is set.")
    smtp_timeout_s: float = Field(default=10.0, gt=0, le=120, description="Timeout of each SMTP network operation.")
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, le=60,
        description="A webhook delivery attempt is abandoned after this many seconds in all (connect, send, answer).")
    webhook_allow_private: bool = Field(
        default=False,
        description="Allow webhook URLs whose host is or resolves to a loopback, private, link-local or otherwise "
        "non-public address. Off by default: deliveries come from the trusted scorer, next to the database and the "
        "storage, and an organizer's URL could otherwise reach internal services. Turn on for receivers on an "
        "internal network (or for tests on 127.0.0.1).")
    notify_interval_s: float = Field(
        default=10.0, gt=0, description="How often the trusted scorer's beat turns new events into deliveries and "
        "sends the due ones.")
    notify_max_attempts: int = Field(
        default=8, ge=1, le=50, description="Attempts per webhook or e-mail delivery before it is marked failed.")
    notify_backoff_s: float = Field(
        default=30.0, gt=0, description="Wait before the second attempt of a delivery; doubled after each failed "
        "attempt, up to SEGARENA_NOTIFY_BACKOFF_MAX_S.")
    notify_backoff_max_s: float = Field(default=3600.0, gt=0, description="Longest wait between two attempts.")
    notify_concurrency: int = Field(
        default=4, ge=1, le=64, description="Deliveries the dispatcher sends at the same time (threads).")
    notify_lookback_h: float = Field(
        default=24.0, gt=0, description="Audit events older than this that were never dispatched (the scorer was "
        "down) are not notified any more.")

    execution: str = Field(
        default="sharded", pattern=r"^sharded$",
        description="How runs are executed: 'sharded', the only mode (a run is split into shards sent on the track's "
        "queue; execution hosts reach only the /api/worker/ routes; the trusted `score` queue scores each case). "
        "The single-host worker with database access ('local') was removed.",
    )
    shard_target_s: float = Field(
        default=60.0, gt=0,
        description="Sharded execution: a track with shard_size 0 gets shards of about this many seconds of work, "
        "estimated from the median wall time of the track's recent cases.",
    )
    shard_default_cases: int = Field(
        default=10, ge=1,
        description="Sharded execution: cases per shard of a track with shard_size 0 and no recent case times.",
    )
    shard_balance: bool = Field(
        default=True,
        description="Sharded execution: round a run's shard count up to a multiple of the workers online on its queue "
        "(sizes at most the shard size, differing by at most one, larger first), so they finish the run together.",
    )
    shard_heartbeat_s: float = Field(
        default=2.0, gt=0,
        description="Sharded execution: how often an execution host heartbeats a shard it holds while a container "
        "runs (it learns of a cancel from the answer); told to workers in the shard spec.",
    )
    worker_meta_max_bytes: int = Field(
        default=256 * 1024, ge=4096,
        description="Largest JSON 'meta' part of a case upload from an execution host (measurements, log tails).",
    )
    bootstrap_worker_token: str | None = Field(
        default=None,
        description="If set, a worker identity with this token, serving every cpu-kind queue, is created at "
        "start-up (embedded mode: `./segarena.sh up` runs its own execution worker).",
    )

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'segarena.db'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{self.data_dir / 'broker.db'}"
        from api.storage import parse_storage_url  # a bad SEGARENA_STORAGE_URL stops the process, saying why

        kind, where, _ = parse_storage_url(self.storage_url)
        if kind == "local" and where:
            if (self.storage_dir is not None
                    and Path(self.storage_dir).expanduser().resolve() != Path(where).expanduser().resolve()):
                raise ValueError(f"SEGARENA_STORAGE_URL ({self.storage_url}) and SEGARENA_STORAGE_DIR ({self.storage_dir}) "
                                 "name different directories; set one of them")
            self.storage_dir = Path(where)
        if self.storage_dir is None:
            self.storage_dir = self.data_dir / "storage"
        self.storage_dir = Path(self.storage_dir).expanduser().resolve()
        parse_queues(self.queue_spec)  # a bad SEGARENA_QUEUES stops the process at start-up, saying why
        if self.smtp_host and not self.smtp_sender.strip():
            raise ValueError("SEGARENA_SMTP_HOST is set but SEGARENA_SMTP_SENDER is empty; set the From address of "
                             "notification e-mails, e.g. SEGARENA_SMTP_SENDER='SegArena <noreply@example.org>'")
        return self

    @property
    def embedded_broker(self) -> bool:
        """True when the broker needs no server (kombu's SQLAlchemy transport)."""
        return self.broker_url.startswith("sqla+")

    @property
    def declared_queues(self) -> dict[str, str]:
        """The declared queues, name -> kind ('cpu' or 'gpu'), in declaration order (SEGARENA_QUEUES)."""
        return parse_queues(self.queue_spec)

    @property
    def worker_kind(self) -> str:
        """'gpu' for a worker that owns GPUs (SEGARENA_WORKER_GPUS set), else 'cpu'."""
        return "gpu" if (self.worker_gpus or "").strip() else "cpu"

    @property
    def queues(self) -> list[str]:
        """The queues this worker consumes: SEGARENA_WORKER_QUEUES, or every declared queue of its kind."""
        explicit = [q.strip() for q in self.worker_queues.split(",") if q.strip()]
        if explicit:
            return explicit
        return [name for name, kind in self.declared_queues.items() if kind == self.worker_kind]

    def ensure_dirs(self) -> None:
        """Create the data and storage directories."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        assert self.storage_dir is not None
        self.storage_dir.mkdir(parents=True, exist_ok=True)


QUEUE_KINDS = ("cpu", "gpu")
QUEUE_NAME_RE = r"^[a-z0-9_-]{1,16}$"


def parse_queues(spec: str) -> dict[str, str]:
    """``'cpu:cpu,gpu:gpu,big:cpu'`` -> ``{'cpu': 'cpu', 'gpu': 'gpu', 'big': 'cpu'}``; a bare name has kind
    gpu if it is ``gpu``, else cpu. Raises ValueError naming what is wrong (SEGARENA_QUEUES)."""
    import re

    out: dict[str, str] = {}
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        name, _, kind = (p.strip() for p in item.partition(":"))
        kind = kind or ("gpu" if name == "gpu" else "cpu")
        if not re.match(QUEUE_NAME_RE, name):
            raise ValueError(f"SEGARENA_QUEUES: queue name {name!r} must match {QUEUE_NAME_RE} (e.g. cpu:cpu,gpu:gpu)")
        if kind not in QUEUE_KINDS:
            raise ValueError(f"SEGARENA_QUEUES: queue {name!r} has kind {kind!r}; the kind is cpu or gpu")
        if name in out:
            raise ValueError(f"SEGARENA_QUEUES: queue {name!r} is declared twice")
        out[name] = kind
    if not out:
        raise ValueError("SEGARENA_QUEUES declares no queue; e.g. SEGARENA_QUEUES=cpu:cpu,gpu:gpu")
    return out


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
