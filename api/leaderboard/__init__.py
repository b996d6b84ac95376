"""The leaderboard feature: the typed board, its read model, its cache and its JSON/CSV routes.

* :mod:`api.leaderboard.board` — the typed :class:`Board` (track info, columns, rows), its JSON and CSV, the
  metric columns (:data:`~api.leaderboard.board.METRICS`: add a metric column there);
* :mod:`api.leaderboard.service` — the read model: database → board, visibility rules, organizer statistics,
  and what the pages show besides boards;
* :mod:`api.leaderboard.cache` — the per-process response cache (LRU-bounded, a 404 never cached) and
  :func:`invalidate`;
* :mod:`api.leaderboard.routes` — ``GET /api/challenges/{c}/tracks/{t}/leaderboard`` (JSON), ``….csv`` and
  ``…/stability``;
* :mod:`api.leaderboard.viewer` — who is asking (API token or web session).

The HTML pages live in ``leaderboard_web`` and read through this package.
"""

from api.leaderboard.board import SIZE_CLASSES, Board, Column, MetricSpec, Row, to_json_bytes
from api.leaderboard.cache import generation, invalidate
from api.leaderboard.service import (
    board_version,
    build_board,
    find_track,
    freeze_cutoff,
    may_see_submission,
    modality_order,
    public_submission_ids,
    publicly_visible,
    stability,
)

__all__ = [
    "SIZE_CLASSES", "Board", "Column", "MetricSpec", "Row", "to_json_bytes", "generation", "invalidate",
    "board_version", "build_board", "find_track", "freeze_cutoff", "may_see_submission", "modality_order",
    "public_submission_ids", "publicly_visible", "stability",
]
