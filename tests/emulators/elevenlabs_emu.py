"""Loopback emulator of ElevenLabs' streaming TTS, `GET /v1/voices`, `GET /v1/models` and Scribe
(`POST /v1/speech-to-text`, elevenlabs_stt_emu.py)."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.emulators import elevenlabs_stt_emu
from tests.emulators.audio import encoded, split
from tests.emulators.behaviour import EmulatorState, before_first_byte, paced, record, retry_after_headers

MODELS = ("eleven_flash_v2_5", "eleven_turbo_v2_5", "eleven_multilingual_v2")
# Every output_format the real API names; the emulator can only produce the mp3 ones and pcm_24000.
KNOWN_FORMATS = frozenset(
    ["mp3_22050_32", "mp3_24000_48"]
    + [f"mp3_44100_{r}" for r in (32, 64, 96, 128, 192)]
    + [f"opus_48000_{r}" for r in (32, 64, 96, 128, 192)]
    + [f"{c}_{r}" for c in ("pcm", "wav") for r in (8000, 16000, 22050, 24000, 32000, 44100, 48000)]
    + ["ulaw_8000", "alaw_8000"]
)
CONTENT_TYPES = {"mp3": "audio/mpeg", "pcm": "audio/pcm"}
_PREVIEW = "https://storage.googleapis.com/eleven-public-prod/premade/voices/{id}/preview.mp3"


def _voice(voice_id: str, name: str, labels: dict[str, str], locales: list[tuple[str, str, str]]) -> dict[str, Any]:
    return {
        "voice_id": voice_id,
        "name": name,
        "category": "premade",
        "labels": labels,
        "description": None,
        "preview_url": _PREVIEW.format(id=voice_id),
        "verified_languages": [
            {"language": lang, "model_id": model, "accent": labels.get("accent"), "locale": locale, "preview_url": None}
            for lang, locale, model in locales
        ],
    }


VOICES = [
    _voice(
        "21m00Tcm4TlvDq8ikWAM",
        "Rachel",
        {"accent": "american", "description": "calm", "age": "young", "gender": "female", "use_case": "narration"},
        [("en", "en-US", "eleven_multilingual_v2"), ("en", "en-US", "eleven_turbo_v2_5")],
    ),
    _voice(
        "EXAVITQu4vr4xnSDxMaL",
        "Sarah",
        {"accent": "american", "description": "soft", "age": "young", "gender": "female", "use_case": "news"},
        [("en", "en-US", "eleven_flash_v2_5"), ("fr", "fr-FR", "eleven_multilingual_v2")],
    ),
    _voice(
        "pNInz6obpgDQGcFmaJgB",
        "Adam",
        {"accent": "american", "description": "deep", "age": "middle aged", "gender": "male", "use_case": "narration"},
        [],
    ),
]
VOICE_IDS = frozenset(v["voice_id"] for v in VOICES)


def _detail(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": {"status": code, "message": message}}, status_code=status, headers=headers)


def _validation(loc: list[Any], msg: str, type_: str, input_: Any = None) -> JSONResponse:
    return JSONResponse({"detail": [{"type": type_, "loc": loc, "msg": msg, "input": input_}]}, status_code=422)


def _authorized(request: Request, state: EmulatorState) -> bool:
    return request.headers.get("xi-api-key") == state.api_key


def _unauthorized() -> JSONResponse:
    return _detail(401, "invalid_api_key", "Invalid API key")


def _native(output_format: str) -> str | None:
    """The emulator's audio kind for an output_format, or None when it cannot produce it."""
    if output_format.startswith("mp3_"):
        return "mp3"
    if output_format == "pcm_24000":
        return "pcm"
    return None


def create_app(state: EmulatorState) -> Starlette:
    async def tts(request: Request) -> Response:
        body = await record(request, state)
        if not _authorized(request, state):
            return _unauthorized()
        output_format = request.query_params.get("output_format", "mp3_44100_128")
        if output_format not in KNOWN_FORMATS:
            return _validation(["query", "output_format"], "Input should be a valid output format", "enum", output_format)
        fmt = _native(output_format)
        if fmt is None:
            return _validation(["query", "output_format"], f"{output_format} is not supported by this emulator", "enum", output_format)
        if not isinstance(body, dict):
            return _validation(["body", 0], "JSON decode error", "json_invalid")
        if not isinstance(body.get("text"), str):
            return _validation(["body", "text"], "Field required", "missing")
        voice_id = request.path_params["voice_id"]
        if voice_id not in VOICE_IDS:
            return _detail(404, "voice_not_found", f"A voice with the voice_id {voice_id} was not found.")
        b = state.next_behaviour()
        if not await before_first_byte(request, state, b):
            return Response(status_code=499)  # nobody is listening any more
        if b.fail_status:
            if b.fail_status == 429:
                headers = retry_after_headers(b)
                return _detail(429, "too_many_concurrent_requests", "Too many concurrent requests.", headers)
            return _detail(b.fail_status, "something_went_wrong", "We are sorry, something went wrong. You are not charged for this request.")
        pieces = split(encoded(fmt, b.audio_duration_s), b.chunks)
        return StreamingResponse(paced(state, pieces, behaviour=b), media_type=CONTENT_TYPES[fmt])

    async def voices(request: Request) -> Response:
        await record(request, state)
        if not _authorized(request, state):
            return _unauthorized()
        if state.behaviour.fail_status:
            return _detail(state.behaviour.fail_status, "something_went_wrong", "We are sorry, something went wrong.")
        return JSONResponse({"voices": VOICES})

    async def models(request: Request) -> Response:
        await record(request, state)
        if not _authorized(request, state):
            return _unauthorized()
        if state.behaviour.fail_status:
            return _detail(state.behaviour.fail_status, "something_went_wrong", "We are sorry, something went wrong.")
        return JSONResponse(
            [
                {"model_id": m, "name": m, "can_do_text_to_speech": True, "maximum_text_length_per_request": 40000, "languages": [{"language_id": "en", "name": "English"}]}
                for m in MODELS
            ]
        )

    return Starlette(
        routes=[
            Route("/v1/text-to-speech/{voice_id}/stream", tts, methods=["POST"]),
            Route("/v1/text-to-speech/{voice_id}", tts, methods=["POST"]),
            Route("/v1/voices", voices),
            Route("/v1/models", models),
            *elevenlabs_stt_emu.create_routes(state),
        ]
    )
