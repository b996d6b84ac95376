"""The CLI's one date format: ISO 8601 with the UTC offset, in this machine's time zone (``TZ`` applies).

The API sends UTC (``2026-11-30T20:15:04.123456Z`` or ``+00:00``); the CLI shows
``2026-11-30T21:15:04+01:00`` — unambiguous, sortable, and the reader's own clock.
"""

from __future__ import annotations

from datetime import datetime, UTC
from typing import Any

__all__ = ["when", "now"]


def when(value: Any, *, empty: str = "") -> str:
    """``value`` (an ISO 8601 string or a datetime; naive means UTC) in local time with its offset, to the second.
    Text that is not a date is returned as is; None or "" gives ``empty``."""
    if value is None or value == "":
        return empty
    if isinstance(value, datetime):
        dt = value
    else:
        text = str(value).strip()
        try:
            dt = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            return text
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone().isoformat(timespec="seconds")


def now() -> str:
    """The current local time, in the same format."""
    return when(datetime.now(UTC))
