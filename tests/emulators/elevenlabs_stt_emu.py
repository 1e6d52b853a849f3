"""ElevenLabs Scribe, `POST /v1/speech-to-text` (multipart `file` + `model_id`, `xi-api-key`):
scribe_v2 only (scribe_v1 is retired: a 422), `timestamps_granularity` none | word | character.
Errors: 422 `{"detail": [{type, loc, msg, input}]}`, others `{"detail": {status, message}}`."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.emulators.behaviour import EmulatorState, retry_after_headers
from tests.emulators.stt_wire import TEXT, WORDS, fault, read_upload

MODELS = ("scribe_v2",)
GRANULARITIES = ("none", "word", "character")


def _detail(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": {"status": code, "message": message}}, status_code=status, headers=headers)


def _validation(field: str, msg: str, value: Any = None) -> JSONResponse:
    return JSONResponse({"detail": [{"type": "value_error", "loc": ["body", field], "msg": msg, "input": value}]}, status_code=422)


def _words(granularity: str) -> list[dict[str, Any]]:
    if granularity == "none":
        return []
    out: list[dict[str, Any]] = []
    for index, (word, start, end) in enumerate(WORDS):
        if index:
            out.append({"text": " ", "start": WORDS[index - 1][2], "end": start, "type": "spacing", "speaker_id": "speaker_0", "logprob": 0.0})
        out.append({"text": word, "start": start, "end": end, "type": "word", "speaker_id": "speaker_0", "logprob": -0.1})
    out.append({"text": "(laughs)", "start": 1.12, "end": 1.18, "type": "audio_event", "speaker_id": "speaker_0", "logprob": 0.0})
    return out


def create_routes(state: EmulatorState) -> list[Route]:
    async def speech_to_text(request: Request) -> Response:
        upload = await read_upload(request, state)
        if request.headers.get("xi-api-key") != state.api_key:
            return _detail(401, "invalid_api_key", "Invalid API key")
        model = upload.get("model_id")
        if model is None:
            return _validation("model_id", "Field required")
        if model == "scribe_v1":
            return _validation("model_id", "scribe_v1 has been retired; use scribe_v2", model)
        if model not in MODELS:
            return _validation("model_id", f"Invalid model_id {model!r}", model)
        if upload.audio is None and upload.get("cloud_storage_url") is None:
            return _validation("file", "Either file or cloud_storage_url must be provided")
        granularity = upload.get("timestamps_granularity") or "word"
        if granularity not in GRANULARITIES:
            return _validation("timestamps_granularity", f"Input should be {', '.join(GRANULARITIES)}", granularity)
        b = await fault(request, state)
        if b is None:
            return Response(status_code=499)
        if b.fail_status == 429:
            return _detail(429, "too_many_concurrent_requests", "Too many concurrent requests", retry_after_headers(b))
        if b.fail_status:
            return _detail(b.fail_status, "internal_error", "An internal error occurred")
        language = upload.get("language_code") or "eng"
        return JSONResponse({"language_code": language, "language_probability": 0.98, "text": TEXT, "words": _words(granularity)})

    return [Route("/v1/speech-to-text", speech_to_text, methods=["POST"])]
