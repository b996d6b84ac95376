"""The execution host's own settings (environment prefix ``SEGARENA_``), independent of ``api/``.

An execution host needs three settings: ``SEGARENA_API_URL``, ``SEGARENA_WORKER_TOKEN`` and
``SEGARENA_BROKER_URL`` (docs/worker-protocol.md). Everything else has a default. The sandbox
(:mod:`worker.sandbox`) reads the same attribute names from this object as from the API's settings
(``worker_cpus``, ``worker_gpus``, ``docker_host``, ``output_max_bytes``, ``output_max_files``,
``deployment_id``), so it works with either.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["WorkerConfig", "ConfigError", "load_config", "parse_queues", "default_cache_dir"]

QUEUE_KINDS = ("cpu", "gpu")
QUEUE_NAME_RE = r"^[a-z0-9_-]{1,16}$"
REQUIRED = ("api_url", "worker_token", "broker_url")


class ConfigError(ValueError):
    """The execution host's configuration is missing or wrong (the message names the variable)."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/segarena-worker`` (``~/.cache/segarena-worker``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "segarena-worker"


def parse_queues(spec: str) -> dict[str, str]:
    """``'cpu:cpu,gpu:gpu,big:cpu'`` -> ``{'cpu': 'cpu', 'gpu': 'gpu', 'big': 'cpu'}`` (a bare name has kind gpu if
    it is ``gpu``, else cpu). The contract is docs/worker-protocol.md ("Queues"), defined by
    ``api.settings.parse_queues``; this is the execution host's copy (``worker/`` may not import ``api/``), held to
    the same answers by tests/worker/test_queue_contract.py: change both together."""
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


class WorkerConfig(BaseSettings):
    """Settings of one execution worker process."""

    model_config = SettingsConfigDict(env_prefix="SEGARENA_", env_file=".env", extra="ignore",
                                      populate_by_name=True)

    # -- the three required settings ------------------------------------------------------------
    api_url: str = Field(description="Base URL of the SegArena API, e.g. https://arena.example.org "
                                     "(the worker reaches only its /api/worker/ routes).")
    worker_token: str = Field(repr=False, description="A worker token (segarena admin worker create NAME --queue cpu).")
    broker_url: str = Field(description="The Celery broker the API sends shards to, e.g. redis://broker:6379/0.")

    # -- identity and queues ---------------------------------------------------------------------
    worker_name: str = Field(default="", description="This worker's name (unique per process); default: host-pid.")
    queue_spec: str = Field(
        default="cpu:cpu,gpu:gpu", validation_alias="SEGARENA_QUEUES",
        description="SEGARENA_QUEUES: the declared queues (name:kind), the same value as on the API.")
    worker_queues: str = Field(
        default="", description="Comma-separated queues this worker consumes; default: every declared queue of its "
        "kind (gpu-kind when SEGARENA_WORKER_GPUS is set, else cpu-kind). The API refuses (403) a queue the token "
        "may not serve.")
    worker_cpus: str = Field(default="", description="CPU set this worker pins containers to, e.g. '0-1'; default: "
                                                     "all online cores. Give workers on one host disjoint sets.")
    worker_gpus: str = Field(default="", description="GPU ids this worker owns, e.g. '0'.")
    docker_host: str | None = Field(default=None, description="Docker engine socket; default: DOCKER_HOST or the "
                                                              "local socket.")

    # -- image cache and local files -------------------------------------------------------------
    cache_dir: Path | None = Field(default=None, description="Image archive cache and per-case scratch directory; "
                                                             "default: ~/.cache/segarena-worker.")
    cache_max_bytes: int = Field(default=20 * 1024**3, ge=0, description="Bound of the image archive cache; "
                                 "least recently used archives not in use are evicted past it.")
    cache_max_images: int = Field(default=10, ge=1, description="Most images this worker keeps loaded in the "
                                  "engine: past it (and when an image's archive is evicted) the least recently used "
                                  "ones it loaded are removed, never one in use.")
    image_lock_dir: Path = Field(default=Path("/tmp/segarena-image-locks"),
                                 description="Host-wide directory of per-image load locks: workers sharing one "
                                 "Docker engine (even with separate cache dirs) load an image once. Workers in "
                                 "separate containers must bind-mount the same directory.")

    # -- sandbox bounds (the shard's caps override the output bounds when they name them) ----------
    output_max_bytes: int = Field(default=2 * 1024**3, ge=1024, description="Default bound of a case's outputs/.")
    output_max_files: int = Field(default=16, ge=1, description="Default bound of entries in a case's outputs/.")
    log_max_chars: int = Field(default=64 * 1024, ge=1024, description="Characters of each of stdout/stderr (head "
                               "and tail) sent with a case's measurements.")
    meta_max_bytes: int = Field(default=240 * 1024, ge=4096, description="Largest JSON meta of a case upload; the "
                                "log excerpts are shortened to fit (keep it under the API's "
                                "SEGARENA_WORKER_META_MAX_BYTES, 256 KiB by default).")
    deployment_id: str = Field(default="", description="Label value marking this deployment's containers; default: "
                                                       "a hash of the API URL.")
    keep_case_files: bool = Field(default=False, description="Keep each case's local directory (debugging).")
    sweep_interval_s: float = Field(default=60.0, gt=0, description="How often the worker removes its own "
                                    "containers of shards it no longer runs and containers of dead workers of this "
                                    "host (worker/housekeeping.py); also once at start.")

    # -- HTTP -----------------------------------------------------------------------------------
    http_timeout_s: float = Field(default=60.0, gt=0, description="Connect/read timeout of one API request.")
    http_retries: int = Field(default=5, ge=0, description="Retries of a request after a connection error or a 5xx.")
    http_backoff_s: float = Field(default=0.5, ge=0, description="First retry delay (doubles each retry, max 30 s).")
    calibrate: bool = Field(default=True, description="Measure the calibration workload at start (hello).")
    worker_heartbeat_s: float = Field(default=15.0, gt=0, description="How often this worker tells the API it is "
                                      "there (POST /api/worker/ping), so GET /api/status counts it online while idle.")

    @model_validator(mode="after")
    def _defaults(self) -> WorkerConfig:
        self.api_url = self.api_url.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", self.api_url):
            raise ValueError(f"SEGARENA_API_URL must be an http(s) URL, e.g. https://arena.example.org "
                             f"(got {self.api_url!r})")
        if not self.worker_token.strip():
            raise ValueError("SEGARENA_WORKER_TOKEN is empty: create one with segarena admin worker create NAME")
        if not self.worker_name:
            self.worker_name = f"{socket.gethostname()}-{os.getpid()}"[-100:].lstrip(".-_:@")
        self.cache_dir = Path(self.cache_dir or default_cache_dir()).expanduser().resolve()
        if not self.deployment_id:
            self.deployment_id = hashlib.sha256(self.api_url.encode()).hexdigest()[:16]
        parse_queues(self.queue_spec)
        return self

    # -- derived -------------------------------------------------------------------------------
    @property
    def declared_queues(self) -> dict[str, str]:
        return parse_queues(self.queue_spec)

    @property
    def worker_kind(self) -> str:
        return "gpu" if (self.worker_gpus or "").strip() else "cpu"

    @property
    def queues(self) -> list[str]:
        """The queues this worker consumes: SEGARENA_WORKER_QUEUES, or every declared queue of its kind."""
        explicit = [q.strip() for q in self.worker_queues.split(",") if q.strip()]
        if explicit:
            return explicit
        return [name for name, kind in self.declared_queues.items() if kind == self.worker_kind]

    @property
    def images_dir(self) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / "images"

    @property
    def work_dir(self) -> Path:
        """Per-case scratch directories (each deleted once its case is uploaded)."""
        assert self.cache_dir is not None
        return self.cache_dir / "work"

    def ensure_dirs(self) -> None:
        for d in (self.images_dir, self.work_dir):
            d.mkdir(parents=True, exist_ok=True)


def load_config(**overrides) -> WorkerConfig:
    """The configuration from the environment (and ``overrides``); a missing or bad value raises
    :class:`ConfigError` naming the SEGARENA_ variable and how to fix it."""
    try:
        return WorkerConfig(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()))
            var = f"SEGARENA_{loc.upper()}" if loc else ""
            if err.get("type") == "missing":
                hint = {"SEGARENA_WORKER_TOKEN": " (an organizer creates one: segarena admin worker create NAME "
                                                 "--queue cpu; it is shown once)",
                        "SEGARENA_API_URL": " (the API's address, e.g. https://arena.example.org)",
                        "SEGARENA_BROKER_URL": " (the broker the API sends shards to, e.g. redis://broker:6379/0)",
                        }.get(var, "")
                problems.append(f"{var} is not set{hint}")
            else:
                msg = str(err.get("msg", "")).removeprefix("Value error, ")
                problems.append(f"{var}: {msg}" if var else msg)
        raise ConfigError("execution worker configuration: " + "; ".join(problems)
                          + f" (an execution host needs {', '.join('SEGARENA_' + r.upper() for r in REQUIRED)})") from None
