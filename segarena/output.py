"""The CLI's output layer: everything ``segarena`` shows goes through :func:`clean`.

Labels, team names, failure reasons and container logs come from participants; printed raw, a label
such as ``"\\x1b]0;pwned\\x07\\x1b[2J"`` retitles and clears the reader's terminal (and worse escape
sequences exist). :class:`SafeConsole` (the Rich console every command prints with) cleans the text of
every rendered segment, leaving Rich's own styling intact; :func:`write` is the raw path (CSV to stdout);
``segarena.cli.main`` cleans error messages.
"""

from __future__ import annotations

import re
import sys
from typing import IO, Any
from collections.abc import Iterable

from rich.console import Console
from rich.segment import Segment

__all__ = ["clean", "SafeConsole", "write"]

# ESC sequences: CSI (ESC [ … final byte), OSC / DCS / SOS / PM / APC strings (ended by BEL or ST, or
# running to the end of the text), and two-byte escapes; then any other control character: C0 except
# newline and tab, DEL, C1 (U+0080–U+009F, which some terminals also obey as 8-bit CSI/OSC).
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x1b[\]PX^_][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x9b[0-?]*[ -/]*[@-~]?"
    r"|[\x90\x98\x9d\x9e\x9f][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: Any) -> str:
    """``text`` as a string without terminal control: escape sequences removed whole, other control
    characters (C0 except ``\\n`` and ``\\t``, DEL, C1) dropped. Printable text, including non-ASCII, stays."""
    s = text if isinstance(text, str) else str(text)
    if not _CONTROL.search(s):
        return s
    return _CONTROL.sub("", _ESCAPES.sub("", s))


class SafeConsole(Console):
    """A Rich console whose rendered text is :func:`clean`: tables, progress lines and plain prints alike.
    Rich's own control segments (cursor moves of a live progress bar) and styles are kept."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        # whole strings first, so an escape sequence goes as a whole before markup or highlighting split it
        super().print(*(clean(o) if isinstance(o, str) else o for o in objects), **kwargs)

    def render(self, renderable: Any, options: Any = None) -> Iterable[Segment]:
        for seg in super().render(renderable, options):
            if seg.control is None and seg.text and _CONTROL.search(seg.text):
                yield Segment(clean(seg.text), seg.style, seg.control)
            else:
                yield seg


def write(text: str, file: IO[str] | None = None) -> None:
    """Write raw text (a CSV) to ``file`` (default stdout), :func:`clean`."""
    (file or sys.stdout).write(clean(text))
