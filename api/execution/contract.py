"""The broker contract of sharded execution: task names and queues (shared by the API, which sends, the
trusted scorer, which consumes ``score``, and the execution hosts, which consume the track queues).

Pure constants: importing this module imports neither Celery nor the database.
"""

from __future__ import annotations

__all__ = ["RUN_SHARD_TASK", "SCORE_TASK", "REAP_SHARDS_TASK", "SCORE_QUEUE", "RESERVED_QUEUES",
           "META_STRING_FIELDS", "CASE_STATUSES"]

#: one message per queued shard, args ``[shard_id]``, on the track's queue (execution hosts)
RUN_SHARD_TASK = "segarena.run_shard"
#: one message per uploaded ok output, args ``[case_result_id]``, on ``SCORE_QUEUE`` (trusted)
SCORE_TASK = "segarena.score_case"
#: the shard reaper, sent by the trusted beat on ``SCORE_QUEUE``
REAP_SHARDS_TASK = "segarena.reap_shards"

#: the trusted queue: next to the database and the ground truth; no execution host may serve it
SCORE_QUEUE = "score"
RESERVED_QUEUES = frozenset({SCORE_QUEUE})

CASE_STATUSES = ("ok", "timeout", "oom", "crash", "no_output", "invalid_output")
META_STRING_FIELDS = ("reason", "stdout_tail", "stderr_tail")
