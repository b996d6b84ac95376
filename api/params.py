"""Shared parameter types (ids and slugs bounded so that no input reaches the DB out of range, UTC datetimes) and
:func:`as_utc`, the one UTC fix-up of datetimes read from the database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, overload

from fastapi import Path
from pydantic import AfterValidator

__all__ = ["IdPath", "SlugPath", "MAX_ID", "SLUG_PATTERN", "as_utc", "UtcDatetime", "UtcOut"]

MAX_ID = 2**31 - 1
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"

IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
SlugPath = Annotated[str, Path(min_length=1, max_length=64)]


@overload
def as_utc(value: datetime) -> datetime: ...


@overload
def as_utc(value: None) -> None: ...


def as_utc(value: datetime | None) -> datetime | None:
    """Naive datetimes are UTC (SQLite returns them naive); aware ones are converted to UTC. The only place
    SegArena fixes up a database datetime (tests/api/test_one_home.py keeps it so)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _checked_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    try:
        out = as_utc(value)
    except (OverflowError, ValueError):
        raise ValueError("date out of range") from None
    if not 1970 <= out.year <= 2200:
        raise ValueError("dates must lie between 1970 and 2200")
    return out


UtcDatetime = Annotated[datetime, AfterValidator(_checked_utc)]

UtcOut = Annotated[datetime, AfterValidator(as_utc)]
"""A datetime in a response: always timezone-aware UTC (SQLite hands them back naive)."""
