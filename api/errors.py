"""API errors: every error body is JSON ``{"code": ..., "message": ...}``; bad input never yields a 5xx."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["ApiError", "install_error_handlers", "ErrorBody", "ERROR_RESPONSES"]

log = logging.getLogger(__name__)

_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 409: "conflict", 411: "length_required", 413: "too_large",
                 415: "unsupported_media_type", 416: "range_not_satisfiable", 422: "invalid_request",
                 429: "quota_exceeded"}


class ApiError(Exception):
    """An error a client caused (or can act on): a stable ``code`` and a human ``message``."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


from pydantic import BaseModel  # noqa: E402


class ErrorBody(BaseModel):
    code: str
    message: str


# Documented on every API route: the errors a client can cause, each a JSON ErrorBody.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": f"{code}: JSON {{code, message}} saying what was wrong and what to do"}
    for status, code in _STATUS_CODES.items() if status not in (405, 411, 415)
}


def _body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, "message": message, **extra}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError):
        return JSONResponse(_body(exc.code, exc.message, **exc.extra), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException):
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse(_body(code, message), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError):
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        message = "invalid request: " + "; ".join(problems[:5])
        return JSONResponse(_body("invalid_request", message), status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):  # pragma: no cover - a bug, logged
        log.exception("unhandled error")
        return JSONResponse(_body("internal_error", "internal error; the organizers have been notified"), status_code=500)
