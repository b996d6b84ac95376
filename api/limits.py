"""Request-body size limit, enforced while the body is read: before parsing, before authentication.

``BodyLimitMiddleware`` is a pure ASGI middleware mounted by ``api.app.create_app``. For every HTTP
request except the archive upload routes (which stream to disk and have their own limit,
``max_upload_bytes``) it

- refuses a declared ``Content-Length`` over ``max_body_bytes`` at once, without reading a byte of the
  body: 413 JSON ``{code, message}``;
- counts the bytes of a chunked (undeclared) body as they arrive and stops at the limit: the 413 is
  sent by the middleware itself, the application sees the client go away, and nothing it sends after
  that reaches the client.

A JSON body of N bytes costs the API many times N in parsed objects, so no route may read more than
the limit; the largest legitimate body (a challenge spec: a 50,000-character description and 20
tracks of 20,000 characters each, sent as UTF-8) is under 2 MiB, the default.
"""

from __future__ import annotations

import json
import re
from typing import Any
from collections.abc import Awaitable, Callable, MutableMapping

from starlette.exceptions import HTTPException

__all__ = ["BodyLimitMiddleware", "STREAMING_ROUTES", "is_streaming_route"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The archive upload routes (api/submissions/routes.py): their bodies stream to storage under
# max_upload_bytes (one-shot) or the session's declared size (resumable chunks).
STREAMING_ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("POST", re.compile(r"/api/challenges/[^/]+/tracks/[^/]+/submissions/?")),
    ("PUT", re.compile(r"/api/uploads/[^/]+/?")),
    # an execution host's case upload (api/execution/routes.py) bounds its own body while streaming:
    # SEGARENA_OUTPUT_MAX_BYTES + SEGARENA_WORKER_META_MAX_BYTES
    ("POST", re.compile(r"/api/worker/shards/[^/]+/cases/[^/]+/?")),
)


def is_streaming_route(method: str, path: str) -> bool:
    return any(method == m and pattern.fullmatch(path) for m, pattern in STREAMING_ROUTES)


class _BodyTooLarge(HTTPException):
    """Raised into the application when a counted body passes the limit (the 413 is already sent)."""


def _human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_body_bytes`` (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _message(self) -> str:
        return (f"the request body is larger than {_human(self.max_body_bytes)}, the limit of this API "
                "(SEGARENA_MAX_BODY_BYTES); send a smaller body (image archives go to the upload routes)")

    async def _refuse(self, send: Send, status: int, code: str, message: str) -> None:
        body = json.dumps({"code": code, "message": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_streaming_route(scope.get("method", ""), scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        try:
            declared = _content_length(scope)
        except ValueError:
            await self._refuse(send, 400, "bad_request", "the Content-Length header is not a number of bytes")
            return
        if declared is not None and declared > limit:
            await self._refuse(send, 413, "too_large", self._message())
            return

        received = 0
        started = False  # the application began its response
        refused = False  # this middleware answered 413; the application's response is dropped

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not started:
                        refused = True
                        await self._refuse(send, 413, "too_large", self._message())
                    raise _BodyTooLarge(413, self._message())
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:  # _BodyTooLarge included
            if not refused:
                raise
            # the application failed after the client was answered 413 (it lost its body): nothing to add


def _content_length(scope: Scope) -> int | None:
    """The request's declared Content-Length (the last header wins), None without one; ValueError if not a number."""
    declared: int | None = None
    for key, value in scope.get("headers") or ():
        if key == b"content-length":
            text = value.decode("latin-1").strip()
            if not text.isdigit():
                raise ValueError(text)
            declared = int(text)
    return declared
