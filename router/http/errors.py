"""Errors on the wire: always `{"error": code, "details": text}` with the documented status."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

logger = logging.getLogger("voxrouter")


class ApiError(Exception):
    def __init__(self, status: int, code: str, details: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {details}")
        self.status = status
        self.code = code
        self.details = details
        self.headers = headers or {}


def error_response(status: int, code: str, details: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "details": details}, status_code=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.details, exc.headers)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "invalid_body"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "invalid_body" if exc.status_code < 500 else "internal_error")
    return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Starlette runs this handler outside the middleware, whose send adds X-Request-Id: add it here.
    request_id: str | None = getattr(request.state, "request_id", None)
    logger.exception("unhandled error on %s %s", request.method, request.url.path, extra={"request_id": request_id})
    if request_id is None:
        return error_response(500, "internal_error", "unexpected server error")
    details = f"unexpected server error; request id {request_id} identifies it in the logs"
    return error_response(500, "internal_error", details, {"X-Request-Id": request_id})


EXCEPTION_HANDLERS = {ApiError: _api_error, HTTPException: _http_error, Exception: _unexpected}
