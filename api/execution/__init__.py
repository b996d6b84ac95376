"""The trusted side of sharded execution (docs/worker-protocol.md).

- :mod:`api.execution.contract`: task names, the trusted queue, wire limits (no DB, no Celery).
- :mod:`api.execution.identity`: worker identities (members with role ``worker``), bootstrap.
- :mod:`api.execution.shards`: splitting a run into shards, sending them, claiming, leases, the reaper, cancel.
- :mod:`api.execution.scoring`: trusted scoring of an uploaded case output, fail-fast, finishing a run.
- :mod:`api.execution.routes`: ``/api/worker/*`` (execution hosts) and ``/api/admin/workers`` (organizers).
- :mod:`api.execution.celery`: the trusted Celery app (queue ``score`` + beat for the shard reaper).

Nothing here imports ``worker/``.
"""
