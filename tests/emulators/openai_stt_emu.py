"""OpenAI's `POST /v1/audio/transcriptions` and `/v1/audio/translations` (multipart, Bearer key):
whisper-1 answers every response_format; gpt-4o-transcribe and gpt-4o-mini-transcribe json or text
only and no timestamp_granularities, as the real API. Errors are `{"error": {message, type, param, code}}`."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.emulators.behaviour import EmulatorState, retry_after_headers
from tests.emulators.stt_wire import DURATION_S, TEXT, WORDS, fault, read_upload

MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
TEXT_ONLY = frozenset({"gpt-4o-transcribe", "gpt-4o-mini-transcribe"})
FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
TRANSLATED = "Hello from the emulator, in English."


def _error(status: int, message: str, type_: str, code: str | None = None, param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}}, status_code=status, headers=headers)


def _verbose(text: str, task: str, granularities: list[str], temperature: float) -> dict[str, Any]:
    out: dict[str, Any] = {"task": task, "language": "english", "duration": DURATION_S, "text": text}
    if "segment" in granularities or not granularities:
        out["segments"] = [{"id": 0, "seek": 0, "start": 0.0, "end": DURATION_S, "text": " " + text, "tokens": [50364],
                            "temperature": temperature, "avg_logprob": -0.2, "compression_ratio": 0.9, "no_speech_prob": 0.01}]
    if "word" in granularities:
        out["words"] = [{"word": w, "start": s, "end": e} for w, s, e in WORDS]
    out["usage"] = {"type": "duration", "seconds": round(DURATION_S)}
    return out


def create_routes(state: EmulatorState) -> list[Route]:
    async def handle(request: Request, task: str) -> Response:
        upload = await read_upload(request, state)
        if request.headers.get("authorization") != f"Bearer {state.api_key}":
            return _error(401, "Incorrect API key provided: sk-...", "invalid_request_error", "invalid_api_key")
        if upload.audio is None:
            return _error(400, "Missing required parameter: 'file'.", "invalid_request_error", None, "file")
        model = upload.get("model")
        if model is None:
            return _error(400, "Missing required parameter: 'model'.", "invalid_request_error", None, "model")
        if model not in MODELS or (task == "translate" and model != "whisper-1"):
            return _error(400, f"Invalid model {model}.", "invalid_request_error", "model_not_found", "model")
        fmt = upload.get("response_format") or "json"
        if fmt not in FORMATS or (model in TEXT_ONLY and fmt not in ("json", "text")):
            return _error(400, f"response_format '{fmt}' is not compatible with model '{model}'.", "invalid_request_error", "unsupported_value", "response_format")
        granularities = upload.all("timestamp_granularities[]")
        if granularities and (fmt != "verbose_json" or model in TEXT_ONLY):
            return _error(400, "timestamp_granularities requires response_format=verbose_json.", "invalid_request_error", None, "timestamp_granularities")
        b = await fault(request, state)
        if b is None:
            return Response(status_code=499)
        if b.fail_status == 429:
            return _error(429, "Rate limit reached for requests", "requests", "rate_limit_exceeded", headers=retry_after_headers(b))
        if b.fail_status:
            return _error(b.fail_status, "The server had an error while processing your request.", "server_error")
        text = TRANSLATED if task == "translate" else TEXT
        if fmt == "verbose_json":
            return JSONResponse(_verbose(text, task, granularities, float(upload.get("temperature") or 0)))
        if fmt == "json":
            return JSONResponse({"text": text, "usage": {"type": "duration", "seconds": round(DURATION_S)}})
        return PlainTextResponse(text + "\n")

    async def transcriptions(request: Request) -> Response:
        return await handle(request, "transcribe")

    async def translations(request: Request) -> Response:
        return await handle(request, "translate")

    return [
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/v1/audio/translations", translations, methods=["POST"]),
    ]
