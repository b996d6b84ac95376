"""Drive a run through THE execution path (sharded, docs/worker-protocol.md) in-process, with real parts:

* the real API app (``server.app.create_app``, sharded execution) served by uvicorn on 127.0.0.1
  (:class:`tests.api_helpers.LiveServer`), a real worker identity and token;
* ``split_run``/``send_shards`` of the trusted side (``enqueue_run_sharded``, as the API does after an upload);
* the real execution host: :class:`worker.shard.ShardExecutor` with :class:`worker.client.WorkerClient` over HTTP,
  the real Docker sandbox;
* the trusted scorer ``api.execution.scoring.score_case`` called inline for every uploaded case: the sender the
  trusted side uses (``api.execution.shards._sender``) is replaced, for the duration of a run, by
  :class:`InlineSender`, which records every message (``segarena.run_shard`` and ``segarena.score_case``) and
  runs ``score_case`` synchronously instead of going through Celery.

:func:`run_sharded` returns a :class:`RunResult`: the run's and submission's final state and reason, the shard
reports, and every message sent — ``requeues`` are the ``run_shard`` messages sent again after an infrastructure
failure (what the old runner's ``sender(run_id, queue, countdown)`` recorded as retries).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from collections.abc import Iterator

__all__ = ["InlineSender", "inline_sender", "RunResult", "ShardedHost", "run_sharded", "create_run"]

_names = itertools.count(1)


class InlineSender:
    """The trusted side's Celery sender, inline: records ``(task, args, queue)``; scores uploads at once."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.sent: list[tuple[str, tuple, str]] = []
        self.score_errors: list[str] = []

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, queue: str | None = None, **_: Any):
        from api.execution.contract import SCORE_TASK
        from api.execution.scoring import score_case

        args = tuple(args or ())
        self.sent.append((name, args, queue or ""))
        if name == SCORE_TASK:
            try:
                score_case(self.settings, int(args[0]))
            except Exception as exc:
                self.score_errors.append(f"{exc.__class__.__name__}: {exc}")
                raise
        return SimpleNamespace(id=uuid.uuid4().hex)

    def of(self, task: str) -> list[tuple[tuple, str]]:
        return [(args, queue) for name, args, queue in self.sent if name == task]


@contextlib.contextmanager
def inline_sender(settings: Any) -> Iterator[InlineSender]:
    """Within the block, the trusted side sends through an :class:`InlineSender` (restored after)."""
    import api.execution.shards as shards

    sender = InlineSender(settings)
    old = shards._sender
    shards._sender = lambda _settings: sender
    try:
        yield sender
    finally:
        shards._sender = old


@dataclass
class RunResult:
    run_id: int
    submission_id: int
    state: Any  # api.models.RunState
    reason: str
    sub_state: Any  # api.models.SubmissionState
    sub_reason: str
    cases_total: int
    reports: list = field(default_factory=list)  # worker.shard.ShardReport per claimed shard
    sent: list = field(default_factory=list)  # (task, args, queue) of every message the trusted side sent
    requeues: list = field(default_factory=list)  # (shard_id, queue): run_shard messages sent again (infra)
    seconds: float = 0.0

    @property
    def final(self) -> bool:
        from api.models import FINAL_STATES

        return self.sub_state in FINAL_STATES


class ShardedHost:
    """The API (uvicorn, 127.0.0.1) + one execution host (ShardExecutor) for ``settings``; reuse it for many runs.

    ``config`` overrides go to :class:`worker.config.WorkerConfig` (e.g. ``keep_case_files``)."""

    def __init__(self, settings: Any, *, docker: Any = None, queues: tuple[str, ...] = ("cpu",),
                 name: str | None = None, **config: Any) -> None:
        from api.db import migrate, session_scope
        from api.execution.identity import create_worker
        from tests.api_helpers import LiveServer, shared_app
        from worker.calibrate import hello_payload
        from worker.client import WorkerClient
        from worker.config import WorkerConfig
        from worker.shard import ShardExecutor

        if getattr(settings, "execution", "sharded") != "sharded":
            settings = settings.model_copy(update={"execution": "sharded"})
        self.settings = settings
        migrate(settings.database_url)
        self.name = name or f"test-exec-{os.getpid()}-{next(_names)}-{uuid.uuid4().hex[:6]}"
        with session_scope(settings.database_url) as s:
            _, self.token = create_worker(s, settings, actor=None, name=self.name, queues=list(queues))
        self.server = LiveServer(shared_app(settings))  # migrated above
        root = Path(settings.data_dir) / "exec-host" / self.name
        values = dict(api_url=self.server.url, worker_token=self.token, broker_url=settings.broker_url,
                      cache_dir=root / "cache", image_lock_dir=root / "locks", worker_name=self.name,
                      calibrate=False, http_retries=2, http_backoff_s=0.05, http_timeout_s=120)
        values.update(config)
        self.config = WorkerConfig(**values)
        self.client = WorkerClient(self.config)
        self.executor = ShardExecutor(self.config, self.client, docker=docker)
        # the hello of ``segarena worker`` (host facts: docker version, CPU model; no calibration run)
        try:
            engine = self.executor.docker()
        except Exception:
            engine = None
        self.client.hello(hello_payload(self.config, engine, queues=list(queues), calibration_s=0.6))

    @property
    def work_dir(self) -> Path:
        """Where the execution host keeps each case's scratch files (empty between cases)."""
        return Path(self.config.work_dir)

    def close(self) -> None:
        self.client.close()
        self.server.stop()

    def __enter__(self) -> ShardedHost:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    def run(self, run_id: int, *, enqueue: bool = True, max_claims: int = 200) -> RunResult:
        """Split and send run ``run_id`` (unless ``enqueue=False``: already sent), then claim and execute shards
        of its queue until none is left; every upload is scored inline. Returns the final observation."""
        from api.db import session_scope
        from api.execution.contract import RUN_SHARD_TASK
        from api.execution.shards import enqueue_run_sharded
        from api.models import Run

        with session_scope(self.settings.database_url) as s:
            queue = s.get(Run, run_id).queue
        t0 = time.monotonic()
        reports = []
        with inline_sender(self.settings) as sender:
            if enqueue:
                enqueue_run_sharded(self.settings, run_id)
            first = len(sender.of(RUN_SHARD_TASK))
            while len(reports) < max_claims:
                report = self.executor.run_next(queue)
                if report.outcome == "none":
                    break
                reports.append(report)
            else:
                raise AssertionError(f"run {run_id}: more than {max_claims} shard claims")
        shard_msgs = sender.of(RUN_SHARD_TASK)
        result = observe(self.settings, run_id)
        result.reports, result.sent = reports, list(sender.sent)
        result.requeues = [(args[0], q) for args, q in shard_msgs[first:]]
        result.seconds = time.monotonic() - t0
        return result


def observe(settings: Any, run_id: int) -> RunResult:
    from api.db import session_scope
    from api.models import Run, Submission

    with session_scope(settings.database_url) as s:
        run = s.get(Run, run_id)
        sub = s.get(Submission, run.submission_id)
        return RunResult(run_id=run.id, submission_id=sub.id, state=run.state, reason=run.reason or "",
                         sub_state=sub.state, sub_reason=sub.reason or "", cases_total=int(run.cases_total or 0))


def run_sharded(run_id: int, settings: Any, *, docker: Any = None, **overrides: Any) -> RunResult:
    """Run ``run_id`` to its end through the sharded path (a fresh :class:`ShardedHost`, closed after).

    ``overrides`` are settings fields (e.g. ``max_attempts=2``) applied to a copy of ``settings``."""
    if overrides:
        settings = settings.model_copy(update=overrides)
    with ShardedHost(settings, docker=docker) as host:
        return host.run(run_id)


def create_run(settings: Any, *, testset: str, image_id: str, archive: Path | None = None, team: str = "team-a",
               track: Any = None, **track_fields: Any) -> tuple[int, int]:
    """A queued submission and its queued Run as the old tests made them (tests/worker_helpers.py): a fresh track
    (``track_fields``) unless ``track`` (its id) is given; the image is on the engine already (no archive is
    downloaded). Returns (submission_id, run_id)."""
    from api.db import migrate, session_scope
    from api.models import Track
    from tests.worker_helpers import seed_submission, seed_track

    migrate(settings.database_url)
    if archive is None:
        archive = Path(settings.data_dir) / "placeholder-image.tar"
        if not archive.exists():
            archive.write_bytes(b"placeholder: the test images are on the engine already")
    with session_scope(settings.database_url) as s:
        if track is None:
            t = seed_track(s, testset=str(testset), slug=f"t{uuid.uuid4().hex[:8]}", **track_fields)
        else:
            t = s.get(Track, track)
        sub, run = seed_submission(s, track=t, team_name=team, image_id=image_id, archive=archive)
        return sub.id, run.id
