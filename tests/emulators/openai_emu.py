"""Loopback emulator of OpenAI's `POST /v1/audio/speech`, `GET /v1/models` and speech to text
(`/v1/audio/transcriptions`, `/v1/audio/translations`: openai_stt_emu.py)."""

from __future__ import annotations

import base64
import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.emulators import openai_stt_emu
from tests.emulators.audio import encoded, split
from tests.emulators.behaviour import EmulatorState, before_first_byte, paced, record, retry_after_headers

CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac", "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}
VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse", "marin", "cedar"}


def _error(status: int, message: str, type_: str, code: str | None = None, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}}, status_code=status)


def _authorized(request: Request, state: EmulatorState) -> bool:
    return request.headers.get("authorization") == f"Bearer {state.api_key}"


def create_app(state: EmulatorState) -> Starlette:
    async def speech(request: Request) -> Response:
        body = await record(request, state)
        if not _authorized(request, state):
            return _error(401, "Incorrect API key provided: sk-...", "invalid_request_error", "invalid_api_key")
        if not isinstance(body, dict):
            return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        for field in ("model", "input", "voice"):
            if field not in body:
                return _error(400, f"Missing required parameter: '{field}'.", "invalid_request_error", None, field)
        voice = body["voice"]
        if isinstance(voice, str) and voice not in VOICES:
            return _error(400, f"Invalid value for 'voice': {voice}", "invalid_request_error", None, "voice")
        if len(body["input"]) > 4096:
            return _error(400, "input is too long (max 4096)", "invalid_request_error", "string_above_max_length", "input")
        fmt = body.get("response_format", "mp3")
        if fmt not in CONTENT_TYPES:
            return _error(400, f"Invalid value for 'response_format': {fmt}", "invalid_request_error", None, "response_format")
        b = state.next_behaviour()
        if not await before_first_byte(request, state, b):
            return Response(status_code=499)
        if b.fail_status:
            headers = retry_after_headers(b)
            if b.fail_status == 429:
                return JSONResponse({"error": {"message": "Rate limit reached", "type": "requests", "param": None, "code": "rate_limit_exceeded"}}, 429, headers=headers)
            return _error(b.fail_status, "The server had an error while processing your request.", "server_error")
        pieces = split(encoded(fmt, b.audio_duration_s), b.chunks)
        if body.get("stream_format") == "sse":
            def wrap(piece: bytes) -> bytes:
                event = {"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode()}
                return f"data: {json.dumps(event)}\n\n".encode()

            async def sse():
                async for event in paced(state, pieces, wrap, b):
                    yield event
                done = {"type": "speech.audio.done", "usage": {"input_tokens": len(body["input"]), "output_tokens": 1, "total_tokens": len(body["input"]) + 1}}
                yield f"data: {json.dumps(done)}\n\n".encode()

            return StreamingResponse(sse(), media_type="text/event-stream")
        return StreamingResponse(paced(state, pieces, behaviour=b), media_type=CONTENT_TYPES[fmt])

    async def models(request: Request) -> Response:
        await record(request, state)
        if not _authorized(request, state):
            return _error(401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key")
        if state.behaviour.fail_status and state.behaviour.fail_status >= 500:
            return _error(state.behaviour.fail_status, "The server had an error", "server_error")
        return JSONResponse({"object": "list", "data": [{"id": m, "object": "model", "owned_by": "openai"} for m in ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")]})

    routes = [Route("/v1/audio/speech", speech, methods=["POST"]), Route("/v1/models", models)]
    return Starlette(routes=routes + openai_stt_emu.create_routes(state))
