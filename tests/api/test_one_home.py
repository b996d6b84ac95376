"""Rules with one home: a second, possibly disagreeing copy coming back fails here.

- the UTC fix-up of naive database datetimes: ``api.params.as_utc``;
- the run-state sets (active, executing, final): ``api.lifecycle``;
- the latest attempt of a submission: ``api.lifecycle.latest_attempt_subquery``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from api.params import as_utc

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "leaderboard_web", "segarena", "bench", "scripts")


def _offenders(pattern: re.Pattern[str], allowed: set[str]) -> list[str]:
    out = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in allowed or "migrations" in path.parts:
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    out.append(f"{rel}:{n}: {line.strip()}")
    return out


def test_as_utc() -> None:
    naive = datetime(2026, 5, 1, 12, 0)  # noqa: DTZ001 - a naive value as SQLite returns it
    assert as_utc(naive) == datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    other = datetime(2026, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert as_utc(other).tzinfo is UTC and as_utc(other) == as_utc(naive)
    assert as_utc(None) is None


def test_one_utc_fixup() -> None:
    """One on the server (api.params.as_utc) and one in the CLI, which imports no server code (segarena.dates)."""
    assert _offenders(re.compile(r"\.replace\(tzinfo="), {"api/params.py", "segarena/dates.py"}) == []


def test_one_definition_of_the_run_state_sets() -> None:
    """No literal tuple/set of run states (e.g. ``(RunState.queued, RunState.loading, …)``) outside api.lifecycle:
    two such lists once disagreed (one had ``queued``, the other not)."""
    pattern = re.compile(r"[(\[{]\s*RunState\.\w+\s*,\s*RunState\.\w+\s*,\s*RunState\.\w+")
    assert _offenders(pattern, {"api/lifecycle.py"}) == []


def test_one_latest_attempt_query() -> None:
    pattern = re.compile(r"func\.max\(Run\.attempt\)|attempt\s*>\s*out\[")
    assert _offenders(pattern, {"api/lifecycle.py"}) == []


def test_the_wire_case_statuses_are_the_database_ones() -> None:
    """api.execution.contract.CASE_STATUSES (pure, what a worker may upload) is a copy kept import-light on purpose;
    it must name exactly the CaseStatus values the database stores."""
    from api.execution.contract import CASE_STATUSES
    from api.models import CaseStatus

    assert tuple(s.value for s in CaseStatus) == CASE_STATUSES
