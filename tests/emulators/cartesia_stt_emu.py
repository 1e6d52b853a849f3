"""Cartesia's batch speech to text, `POST /stt` (multipart `file`, `model` ink-whisper, `language`,
`timestamp_granularities[]` word), with `Authorization: Bearer` and a `cartesia-version` (the
current SDK's 2026-08-14 or later). Errors are `{error_code, title, message, request_id}`."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.emulators.behaviour import EmulatorState, retry_after_headers
from tests.emulators.stt_wire import DURATION_S, TEXT, WORDS, fault, read_upload

MODELS = ("ink-whisper",)
MIN_STT_VERSION = "2025-04-16"  # ISO dates compare as text


def _error(status: int, code: str, title: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error_code": code, "title": title, "message": message, "request_id": str(uuid.uuid4())}
    return JSONResponse(body, status_code=status, headers=headers)


def create_routes(state: EmulatorState) -> list[Route]:
    async def stt(request: Request) -> Response:
        upload = await read_upload(request, state)
        if request.headers.get("authorization") != f"Bearer {state.api_key}":
            return _error(401, "unauthorized", "Unauthorized", "Invalid API key")
        version = request.headers.get("cartesia-version")
        if not version or version < MIN_STT_VERSION:
            return _error(400, "invalid_version", "Invalid version", f"cartesia-version {version!r} does not serve /stt")
        model = upload.get("model")
        if model not in MODELS:
            return _error(422, "invalid_request", "Invalid request", f"model: {model!r} is not a speech-to-text model")
        if upload.audio is None:
            return _error(422, "invalid_request", "Invalid request", "file: required")
        granularities = upload.all("timestamp_granularities[]")
        if any(g != "word" for g in granularities):
            return _error(422, "invalid_request", "Invalid request", "timestamp_granularities: only word")
        b = await fault(request, state)
        if b is None:
            return Response(status_code=499)
        if b.fail_status == 429:
            return _error(429, "rate_limited", "Rate limited", "Too many requests", retry_after_headers(b))
        if b.fail_status:
            return _error(b.fail_status, "internal_error", "Internal error", "Something went wrong")
        out: dict[str, object] = {"type": "transcript", "text": TEXT, "language": upload.get("language") or "en", "duration": DURATION_S,
                                  "is_final": True, "request_id": str(uuid.uuid4())}
        if granularities:
            out["words"] = [{"word": w, "start": s, "end": e} for w, s, e in WORDS]
        return JSONResponse(out)

    return [Route("/stt", stt, methods=["POST"])]
