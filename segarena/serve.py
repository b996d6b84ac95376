"""``segarena serve``: uvicorn with limits that hold before any request reaches the app.

Uvicorn bounds concurrency (``limit_concurrency``: beyond it, 503 at once) and idle keep-alive
connections, but has no timeout for reading a request head: a client that opens a connection and sends
its headers a byte at a time (slowloris) holds the connection for as long as it likes. The protocol
classes here add that timeout: a connection whose request line and headers are not complete
``SEGARENA_HEADER_TIMEOUT_S`` seconds after it opened (or after the previous response on it was sent) is
closed. They subclass uvicorn's own HTTP protocols (h11, or httptools when it is installed, like
uvicorn's ``auto``), so everything else is uvicorn's behaviour.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["HeaderTimeoutMixin", "HeaderTimeoutH11Protocol", "PARSERS", "protocol_class", "loop_name", "stack_line",
           "uvicorn_limits", "run"]

log = logging.getLogger(__name__)


class HeaderTimeoutMixin:
    """Close a connection whose request head is still incomplete ``header_timeout_s`` seconds after the
    connection opened or the previous response completed. ``header_timeout_s`` comes from the uvicorn
    ``Config`` attribute of that name when set (tests, embedding), else from SEGARENA_HEADER_TIMEOUT_S."""

    _head_timer: asyncio.TimerHandle | None = None
    head_timeouts = 0  # connections closed by the timer, in this process (for tests and logs)

    def _header_timeout(self) -> float:
        value = getattr(self.config, "header_timeout_s", None)  # type: ignore[attr-defined]
        if value is None:
            from api.settings import get_settings

            value = get_settings().header_timeout_s
        return float(value)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self._header_timeout(), self._on_head_timeout)  # type: ignore[attr-defined]

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _on_head_timeout(self) -> None:
        self._head_timer = None
        transport = self.transport  # type: ignore[attr-defined]
        if transport is not None and not transport.is_closing() and not self._head_complete():
            HeaderTimeoutMixin.head_timeouts += 1
            self.logger.info("closing a connection whose request head was incomplete after %ss",  # type: ignore[attr-defined]
                             self._header_timeout())
            transport.close()

    def _head_complete(self) -> bool:  # pragma: no cover - each protocol says
        raise NotImplementedError

    def connection_made(self, transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing() and not self._head_complete():  # type: ignore[attr-defined]
            self._arm_head_timer()  # waiting for the next request's head on a kept-alive connection


class HeaderTimeoutH11Protocol(HeaderTimeoutMixin, H11Protocol):
    """uvicorn's h11 protocol with a request-head timeout."""

    def _head_complete(self) -> bool:
        import h11

        return self.conn.their_state is not h11.IDLE

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_timer is not None and self._head_complete():
            self._cancel_head_timer()


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed: uvicorn's auto picks h11 too
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

if HttpToolsProtocol is not None:

    class HeaderTimeoutHttpToolsProtocol(HeaderTimeoutMixin, HttpToolsProtocol):
        """uvicorn's httptools protocol with a request-head timeout."""

        _in_head = False

        def _head_complete(self) -> bool:
            return not self._in_head and self.cycle is not None and not self.cycle.response_complete

        def on_message_begin(self) -> None:
            self._in_head = True
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._cancel_head_timer()
            super().on_headers_complete()

    __all__.append("HeaderTimeoutHttpToolsProtocol")


PARSERS = ("auto", "httptools", "h11")


def protocol_class(parser: str = "auto") -> type[asyncio.Protocol]:
    """The HTTP protocol with the head timeout for ``parser``: ``auto`` is uvicorn's choice (httptools when
    installed, else h11)."""
    if parser not in PARSERS:
        raise ValueError(f"unknown HTTP parser {parser!r}: choose one of {', '.join(PARSERS)}")
    if parser in ("auto", "httptools") and HttpToolsProtocol is not None:
        return HeaderTimeoutHttpToolsProtocol
    if parser == "httptools":
        raise RuntimeError("httptools is not installed; install the server stack: pip install 'segarena[server]'")
    return HeaderTimeoutH11Protocol


def loop_name() -> str:
    """The event loop uvicorn's ``auto`` runs on: uvloop when installed, else asyncio."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def stack_line(parser: str = "auto") -> str:
    """One line naming the server stack: uvicorn, loop and HTTP parser with their versions."""
    from importlib.metadata import PackageNotFoundError, version

    def v(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    loop = loop_name()
    http = "httptools" if protocol_class(parser) is not HeaderTimeoutH11Protocol else "h11"
    return f"uvicorn {v('uvicorn')}, loop {loop} {v(loop) if loop == 'uvloop' else ''}".rstrip() + \
        f", http {http} {v(http)}"


def uvicorn_limits(settings: Any, parser: str = "auto") -> dict[str, Any]:
    """The uvicorn keyword arguments of the limits in ``settings``."""
    return {"http": protocol_class(parser), "limit_concurrency": settings.max_connections,
            "timeout_keep_alive": max(1, min(5, int(settings.header_timeout_s)))}


def run(*, host: str, port: int, workers: int = 1, access_log: bool = True, http: str = "auto") -> None:
    """Serve the platform (the API and the leaderboard pages, ``server.app``) with the limits of the process
    settings (see :func:`uvicorn_limits`), on uvloop and httptools when installed (``segarena[server]``)."""
    import uvicorn

    from api.settings import get_settings

    print(f"segarena serve: {stack_line(http)}", file=sys.stderr, flush=True)  # before uvicorn's own log lines
    uvicorn.run("server.app:create_app", factory=True, host=host, port=port, workers=workers, log_level="info",
                access_log=access_log, **uvicorn_limits(get_settings(), http))
