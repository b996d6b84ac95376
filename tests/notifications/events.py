"""Drive the audit events through the real service functions: the scorer finishing or stopping a run, the trusted
reaper requeueing a shard whose worker stopped heartbeating."""

from __future__ import annotations

from datetime import timedelta
from typing import Any


def fail_run(settings: Any, run_id: int, reason: str) -> None:
    from api.db import session_scope
    from api.execution.scoring import stop_run

    with session_scope(settings.database_url) as s:
        assert stop_run(s, settings, run_id, stopped=reason)


def succeed_run(settings: Any, run_id: int) -> None:
    """Two scored cases (one ok, one crashed) and the run's only shard done: the scorer finishes the run."""
    from api.db import session_scope
    from api.execution.scoring import maybe_finish_run
    from api.models import CaseResult, CaseStatus, Shard, ShardState, utcnow

    with session_scope(settings.database_url) as s:
        s.add(Shard(run_id=run_id, index=0, case_ids=["2DBox_CT_0001", "3DBox_MR_0002"], state=ShardState.done,
                    queue="cpu", finished_at=utcnow()))
        s.add(CaseResult(run_id=run_id, case_id="2DBox_CT_0001", modality="CT", status=CaseStatus.ok, dsc=0.8125,
                         nsd=0.75, runtime_s=1.5, scored=True))
        s.add(CaseResult(run_id=run_id, case_id="3DBox_MR_0002", modality="MR", status=CaseStatus.crash, dsc=0.0,
                         nsd=0.0, runtime_s=0.5, reason="exit code 1", scored=True))
    assert maybe_finish_run(settings, run_id)


def stale_shard(settings: Any, run_id: int, *, worker: str = "gpu-box-7", age_s: float = 3600, index: int = 3) -> int:
    """A shard held by a worker that stopped heartbeating ``age_s`` ago."""
    from api.db import session_scope
    from api.models import Shard, ShardState, utcnow

    with session_scope(settings.database_url) as s:
        shard = Shard(run_id=run_id, index=index, case_ids=["2DBox_CT_0001"], state=ShardState.running, queue="cpu",
                      lease="lease-of-the-dead-worker", deliveries=1, worker_name=worker,
                      claimed_at=utcnow() - timedelta(seconds=age_s + 5),
                      heartbeat_at=utcnow() - timedelta(seconds=age_s))
        s.add(shard)
        s.flush()
        return shard.id


def reaper_requeues(settings: Any, run_id: int) -> int:
    """The trusted reaper finds the stale shard and requeues it (``shard.requeued`` by ``trusted:reaper``)."""
    from api.execution.shards import reap_shards

    shard_id = stale_shard(settings, run_id)
    report = reap_shards(settings, send=False)
    assert shard_id in report["requeued"], report
    return shard_id
