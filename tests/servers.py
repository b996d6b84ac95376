"""The one way tests serve an app on a real socket: uvicorn in a background thread on 127.0.0.1.

``with ThreadServer(app) as server: server.url`` (started on enter, stopped on exit); ``LiveServer(app)`` is the same
server started at once (``.stop()`` when done); ``free_port()`` for processes that need a port of their own.
"""

from __future__ import annotations

import socket
import threading

from tests.waiting import wait_until

__all__ = ["free_port", "ThreadServer", "LiveServer"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """Serve an ASGI app with uvicorn in a background thread on 127.0.0.1 (real sockets, real streaming)."""

    def __init__(self, app, port: int | None = None, **config) -> None:
        import uvicorn

        self.port = port or free_port()
        options = {"log_level": "warning", "lifespan": "on", "timeout_graceful_shutdown": 1, **config}
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, **options))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadServer:
        self.thread.start()

        def started() -> bool:
            if not self.thread.is_alive() and not self.server.started:
                raise RuntimeError("uvicorn did not start")
            return self.server.started

        wait_until(started, 30, "uvicorn to start", interval=0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)

    def __enter__(self) -> ThreadServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LiveServer(ThreadServer):
    """A :class:`ThreadServer` started at once (the API tests' ``live`` fixture)."""

    def __init__(self, app) -> None:
        super().__init__(app, timeout_keep_alive=30, limit_concurrency=200, timeout_graceful_shutdown=None)
        self.start()
