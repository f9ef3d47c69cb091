"""The one place where reelscope's error tree becomes HTTP status codes."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from reelscope.errors import (
    AuthError,
    ConfigError,
    CorruptMediaError,
    EmptyInputError,
    InputError,
    InputNotFoundError,
    LimitExceededError,
    NotFoundError,
    ReelscopeError,
    StoreError,
    TooManyJobsError,
    UnsupportedMediaError,
)

log = logging.getLogger("reelscope.service")

# Most specific first: the first class the error is an instance of decides.
STATUS: tuple[tuple[type[ReelscopeError], int], ...] = (
    (AuthError, 401),
    (NotFoundError, 404),
    (TooManyJobsError, 429),
    (LimitExceededError, 413),
    (UnsupportedMediaError, 415),
    (CorruptMediaError, 422),
    (EmptyInputError, 400),
    (InputNotFoundError, 400),
    (InputError, 400),
    (ConfigError, 400),
    (StoreError, 503),
)


def status_of(exc: ReelscopeError) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def error_body(exc: ReelscopeError) -> dict[str, dict[str, str]]:
    return {"error": {"type": type(exc).__name__, "message": str(exc)}}


def install(app: FastAPI) -> None:
    @app.exception_handler(ReelscopeError)
    async def _handle(request: Request, exc: ReelscopeError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc)
        elif status not in (401, 404):
            log.info("%s %s refused (%d): %s", request.method, request.url.path, status, exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(error_body(exc), status_code=status, headers=headers)
