"""Loopback emulator of Cartesia's `POST /tts/bytes`, paginated `GET /voices` and batch speech to
text (`POST /stt`, cartesia_stt_emu.py)."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.emulators import cartesia_stt_emu
from tests.emulators.audio import encoded, split
from tests.emulators.behaviour import EmulatorState, before_first_byte, paced, record, retry_after_headers

MODELS = frozenset({"sonic", "sonic-2", "sonic-3", "sonic-latest", "sonic-turbo", "sonic-english", "sonic-multilingual"})
MP3_BIT_RATES = frozenset({32000, 64000, 96000, 128000, 192000})
MP3_SAMPLE_RATES = frozenset({8000, 16000, 22050, 24000, 44100, 48000})
CONTENT_TYPES = {"mp3": "audio/mpeg", "pcm": "application/octet-stream"}
# Kept small so that a client asking for 100 voices still has to follow `has_more`.
DEFAULT_MAX_PAGE_SIZE = 2

VOICES: list[dict[str, Any]] = [
    {"id": "a0e99841-438c-4a64-b679-ae501e7d6091", "name": "Barbershop Man", "description": "A smooth, conversational male voice.", "language": "en", "gender": "masculine"},
    {"id": "79a125e8-cd45-4c13-8a67-188112f4dd22", "name": "British Lady", "description": "An elegant female voice with a British accent.", "language": "en", "gender": "feminine"},
    {"id": "694f9389-aac1-45b6-b726-9d9369183238", "name": "Sarah", "description": "A friendly, upbeat female voice.", "language": "en", "gender": "feminine"},
    {"id": "846d6cb0-2301-48b6-9683-48f5618ea2f6", "name": "Spanish Narrator", "description": "A calm Spanish voice for narration.", "language": "es"},
]
VOICE_IDS = frozenset(v["id"] for v in VOICES)


def _error(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status, headers=headers)


def _auth_failure(request: Request, state: EmulatorState) -> Response | None:
    if request.headers.get("x-api-key") != state.api_key:
        return _error(401, "Invalid API key", "The API key in the X-API-Key header is missing or invalid.")
    if not request.headers.get("cartesia-version"):
        return PlainTextResponse("Cartesia-Version header is required", status_code=400)
    return None


def _format_kind(output_format: Any) -> str | None:
    """'mp3' or 'pcm' for an output_format the emulator can produce, else None."""
    if not isinstance(output_format, dict):
        return None
    container = output_format.get("container")
    if container == "raw" and output_format.get("encoding") == "pcm_s16le" and output_format.get("sample_rate") == 24000:
        return "pcm"
    if container == "mp3" and output_format.get("bit_rate") in MP3_BIT_RATES and output_format.get("sample_rate") in MP3_SAMPLE_RATES:
        return "mp3"
    return None


def _body_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    if not isinstance(body.get("model_id"), str) or body["model_id"] not in MODELS:
        return f"invalid model_id: {body.get('model_id')!r}"
    if not isinstance(body.get("transcript"), str) or not body["transcript"]:
        return "transcript is required"
    voice = body.get("voice")
    if not isinstance(voice, dict) or voice.get("mode") != "id" or not isinstance(voice.get("id"), str):
        return "voice must be {'mode': 'id', 'id': <voice id>}"
    if _format_kind(body.get("output_format")) is None:
        return f"unsupported output_format: {body.get('output_format')!r}"
    return None


def create_app(state: EmulatorState, *, max_page_size: int = DEFAULT_MAX_PAGE_SIZE) -> Starlette:
    async def tts_bytes(request: Request) -> Response:
        body = await record(request, state)
        if (failure := _auth_failure(request, state)) is not None:
            return failure
        if body is None:
            return PlainTextResponse("Invalid JSON in request body", status_code=400)
        if (problem := _body_problem(body)) is not None:
            return _error(400, "Bad Request", problem)
        if body["voice"]["id"] not in VOICE_IDS:
            return _error(404, "Not Found", f"voice {body['voice']['id']} not found")
        b = state.next_behaviour()
        if not await before_first_byte(request, state, b):
            return Response(status_code=499)  # nobody is listening any more
        if b.fail_status:
            if b.fail_status == 429:
                headers = retry_after_headers(b)
                return _error(429, "Too Many Requests", "Rate limit exceeded, please retry later.", headers)
            return _error(b.fail_status, "Internal Server Error", "An unexpected error occurred.")
        fmt = _format_kind(body["output_format"])
        assert fmt is not None  # checked by _body_problem
        pieces = split(encoded(fmt, b.audio_duration_s), b.chunks)
        return StreamingResponse(paced(state, pieces, behaviour=b), media_type=CONTENT_TYPES[fmt])

    async def voices(request: Request) -> Response:
        await record(request, state)
        if (failure := _auth_failure(request, state)) is not None:
            return failure
        if state.behaviour.fail_status:
            return _error(state.behaviour.fail_status, "Internal Server Error", "An unexpected error occurred.")
        try:
            limit = int(request.query_params.get("limit", "10"))
        except ValueError:
            return _error(400, "Bad Request", "limit must be an integer")
        if not 1 <= limit <= 100:
            return _error(400, "Bad Request", "limit must be between 1 and 100")
        start = 0
        after = request.query_params.get("starting_after")
        if after is not None:
            ids = [v["id"] for v in VOICES]
            if after not in ids:
                return _error(400, "Bad Request", f"starting_after {after} is not a voice id")
            start = ids.index(after) + 1
        page = VOICES[start : start + min(limit, max_page_size)]
        has_more = start + len(page) < len(VOICES)
        return JSONResponse({"data": page, "has_more": has_more, "next_page": page[-1]["id"] if has_more and page else None})

    routes = [Route("/tts/bytes", tts_bytes, methods=["POST"]), Route("/voices", voices)]
    return Starlette(routes=routes + cartesia_stt_emu.create_routes(state))
