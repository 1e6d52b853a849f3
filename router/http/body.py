"""Reading a JSON body into a pydantic model, with a size cap and errors in the wire shape."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from voxrouter.router.http.errors import ApiError

M = TypeVar("M", bound=BaseModel)


async def read_raw(request: Request, max_bytes: int) -> bytes:
    """The body's bytes, or 413 as soon as it is known to pass `max_bytes`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, "invalid_body", f"body is larger than {max_bytes} bytes")
    parts: list[bytes] = []
    size = 0
    try:
        async for part in request.stream():
            size += len(part)
            if size > max_bytes:
                raise ApiError(413, "invalid_body", f"body is larger than {max_bytes} bytes")
            parts.append(part)
    except ClientDisconnect:  # nobody is left to answer; the status is for the usage row and logs
        raise ApiError(499, "client_disconnected", "the client went away before sending the whole body") from None
    return b"".join(parts)


async def read_body(request: Request, model: type[M], max_bytes: int) -> M:
    raw = await read_raw(request, max_bytes)
    try:
        parsed = model.model_validate_json(raw)
    except ValidationError as exc:
        raise ApiError(400, "invalid_body", describe_validation(exc)) from None
    if _has_nul(parsed.model_dump()):
        # PostgreSQL text cannot hold U+0000, and no field of ours has a use for it.
        raise ApiError(400, "invalid_body", "strings may not contain NUL (U+0000) characters")
    return parsed


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def describe_validation(exc: ValidationError) -> str:
    """A validation error as one line of `field: problem` pairs (the first ten)."""
    problems = []
    for error in exc.errors(include_url=False)[:10]:
        where = ".".join(str(part) for part in error["loc"]) or "body"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)

