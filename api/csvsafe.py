"""CSV cells that a spreadsheet will not run: the one rule for every CSV SegArena serves (the public
leaderboard CSV and the organizers' export)."""

from __future__ import annotations

import re

__all__ = ["FORMULA_PREFIXES", "csv_safe"]

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n", "|", "%")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def csv_safe(value: str) -> str:
    """``value`` prefixed with ``'`` when a spreadsheet would read it as a formula (it starts, maybe after
    spaces, with ``= + - @``, a tab, CR or LF, ``|`` or ``%``); plain numbers such as ``-0.012`` stay as they are."""
    head = value.lstrip(" ")
    if head.startswith(FORMULA_PREFIXES) and not _NUMBER.fullmatch(value.strip()):
        return "'" + value
    return value
