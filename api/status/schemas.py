"""Schemas of ``GET /api/status`` and of a queued submission's place in its queue."""

from __future__ import annotations

from pydantic import BaseModel, Field

from api.params import UtcOut


class WorkerPublic(BaseModel):
    kind: str
    queues: list[str]
    online: bool
    cores: int | None
    cpu_model: str
    last_seen_at: UtcOut
    # organizers only (None for everyone else: host names stay private)
    name: str | None = None
    host: str | None = None
    pid: int | None = None
    started_at: UtcOut | None = None


class QueueStatus(BaseModel):
    name: str
    kind: str = Field(description="cpu or gpu (SEGARENA_QUEUES).")
    queued: int = Field(description="Runs waiting in this queue (cancelled submissions left out).")
    running: int = Field(description="Runs loading, running or scoring.")
    workers_online: int = Field(description="Workers serving this queue seen within SEGARENA_WORKER_ONLINE_S.")
    median_wait_s: float | None = Field(description="Median of started_at - created_at over runs started in the last "
                                                    "24 h (the latest 50 at most); None without such runs.")
    waits_sampled: int
    median_run_s: float | None = Field(description="Median of finished_at - started_at over the latest 50 finished runs.")


class TrackWarning(BaseModel):
    challenge: str
    track: str
    queue: str
    message: str


class StatusPublic(BaseModel):
    queues: list[QueueStatus]
    workers: list[WorkerPublic] = Field(description="Workers seen in the last 24 h.")
    warnings: list[TrackWarning] = Field(description="Tracks (open, or with runs waiting) whose queue no online "
                                                     "worker serves, or whose queue is not declared.")
    online_window_s: float
    generated_at: UtcOut


class QueuePosition(BaseModel):
    """Where a queued submission stands (only while its latest attempt is queued)."""

    queue: str
    position: int = Field(description="1 = the next run this queue's workers will claim.")
    queued: int = Field(description="Runs waiting in this queue.")
    workers_online: int
    median_run_s: float | None
    estimate_s: float | None = Field(description="position x median run duration / workers online; None without a "
                                                 "worker online or without finished runs to measure.")
    how: str = Field(description="How the position and estimate were computed, in one sentence.")
