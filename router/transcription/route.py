"""`POST /v1/audio/transcriptions` (OpenAI's wire), top to bottom: auth -> parse -> resolve ->
limits -> measure -> reserve -> transcribe -> settle -> respond. The request's bookkeeping (usage
row, money, slot) is its ledger's (ledger.py); the duration is measured by decoding the upload
(duration.py), the response rendered by formats.py.
"""

from __future__ import annotations

import contextlib
import time

from starlette.requests import Request
from starlette.responses import Response

from voxrouter.providers.transcription import Transcript, TranscriptionError, TranscriptionRequest
from voxrouter.router import schemas
from voxrouter.router.accounts.auth import Principal
from voxrouter.router.gateway import Gateway
from voxrouter.router.http.errors import ApiError
from voxrouter.router.http.operation import ApiRoute, Operation
from voxrouter.router.limits import policy as limits
from voxrouter.router.transcription import duration, formats
from voxrouter.router.transcription.form import read_form
from voxrouter.router.transcription.ledger import TranscriptionLedger
from voxrouter.router.transcription.models import SttTarget, resolve

# How a transcriber's failure reaches the client.
_ERRORS = {
    "invalid_audio": (400, "invalid_audio"),
    "invalid_option": (400, "invalid_body"),
    "busy": (503, "provider_unavailable"),
    "unavailable": (503, "provider_unavailable"),
    "upstream": (502, "upstream_error"),
}


async def create_transcription(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    started = time.monotonic()
    principal = await gateway.auth.api_key(request)
    ledger = TranscriptionLedger(gateway.store, gateway.wallet, principal, request.state.request_id, started)
    form, target, job = await _admit(request, gateway, principal, ledger)
    try:
        ledger.measured(await _measure(gateway, form.file))
        await ledger.reserve(target.cost_micros(ledger.audio_ms))
        transcript = await _transcribe(target, job)
    except ApiError as exc:
        if not ledger.ended:
            await ledger.refuse(exc.status, exc.code)
        raise
    except Exception:
        if not ledger.ended:
            await ledger.refuse(500, "internal_error")
        raise
    except BaseException:  # cancelled: the client went away
        if not ledger.ended:
            await ledger.refuse(499, "client_disconnected")
        raise
    await ledger.settle(target.cost_micros(ledger.audio_ms))
    return _respond(form, transcript, target, ledger.audio_ms)


async def _admit(
    request: Request, gateway: Gateway, principal: Principal, ledger: TranscriptionLedger
) -> tuple[schemas.TranscriptionRequest, SttTarget, TranscriptionRequest]:
    """Parse the form, resolve its model, check its options and count the request against its
    key's limits (taking a concurrency slot); a refusal ends the request."""
    counted = False
    spec = gateway.config.transcription
    try:
        form, filename = await read_form(request, spec.max_file_bytes)
        target = resolve(spec, gateway.transcribers, form.model)
        ledger.resolved(target.provider_id, target.label)
        job = _job(target, form, filename, principal, ledger)
        _check(target, form, job)
        counted = True
        admission = await limits.admit(request, gateway.limits, gateway.config.limits, principal, take_slot=True)
    except ApiError as exc:
        if not counted:  # refused before it was counted: count it now, for its X-RateLimit-* headers
            with contextlib.suppress(ApiError):
                await limits.admit(request, gateway.limits, gateway.config.limits, principal)
        await ledger.refuse(exc.status, exc.code)
        raise
    ledger.hold(admission.slot if admission else None)
    return form, target, job


def _check(target: SttTarget, form: schemas.TranscriptionRequest, job: TranscriptionRequest) -> None:
    """The options the target's model cannot take: 400 before any audio is decoded or money held."""
    if job.word_timestamps and not target.features.word_timestamps:
        raise ApiError(400, "invalid_body", f"timestamp_granularities[]: {target.label} has no word timestamps")
    if form.prompt and not target.features.prompt:
        raise ApiError(400, "invalid_body", f"prompt: {target.label} takes none")
    try:
        target.transcriber.check(job)
    except TranscriptionError as exc:
        raise ApiError(400, "invalid_body", f"{target.label}: {exc.message}") from None


async def _measure(gateway: Gateway, audio: bytes) -> int:
    """The upload's duration in ms, decoded off the event loop; 400 `invalid_audio` when it is not audio."""
    try:
        return await duration.measure_ms_async(audio, gateway.config.transcription.local.max_audio_s)
    except duration.InvalidAudio as exc:
        raise ApiError(400, "invalid_audio", f"file: {exc}") from None
    except duration.AudioTooLong as exc:
        raise ApiError(400, "invalid_audio", f"file: {exc}") from None


def _job(
    target: SttTarget, form: schemas.TranscriptionRequest, filename: str, principal: Principal, ledger: TranscriptionLedger
) -> TranscriptionRequest:
    return TranscriptionRequest(
        audio=form.file,
        filename=filename,
        model=target.model_id,
        language=form.language,
        prompt=form.prompt,
        temperature=form.temperature,
        word_timestamps="word" in form.timestamp_granularities,
        tenant=principal.org_id,
        request_id=ledger.request_id,
    )


async def _transcribe(target: SttTarget, request: TranscriptionRequest) -> Transcript:
    try:
        return await target.transcriber.transcribe(request)
    except TranscriptionError as exc:
        status, code = _ERRORS.get(exc.kind, (502, "upstream_error"))
        headers = {"Retry-After": "1" if exc.kind == "busy" else "60"} if status == 503 else None
        raise ApiError(status, code, f"{target.label}: {exc.message}", headers=headers) from None


def _respond(form: schemas.TranscriptionRequest, transcript: Transcript, target: SttTarget, audio_ms: int) -> Response:
    headers = {"X-VoxRouter-Provider": target.provider_id, "X-VoxRouter-Model": target.label}
    if form.stream:
        body = b"".join(formats.sse_events(transcript, audio_ms))
        return Response(body, media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"})
    rendered = formats.render(transcript, form.response_format, form.timestamp_granularities, audio_ms, form.temperature)
    return Response(rendered, media_type=formats.CONTENT_TYPES[form.response_format], headers=headers)


ROUTES = [
    ApiRoute("/v1/audio/transcriptions", create_transcription, method="POST", operation=Operation(
        "createTranscription",
        "Transcribe audio (OpenAI's multipart form); json or verbose_json, text/srt/vtt as text/plain, "
        "or SSE transcript.text.delta / transcript.text.done events with stream=true. Priced per audio minute.",
        schemas.TranscriptionOut,
        body=schemas.TranscriptionRequest,
        body_media_type="multipart/form-data",
        response_variants=(schemas.TranscriptionVerboseOut,),
        text_media_types=("text/plain", "text/event-stream"),
        errors=(400, 401, 402, 413, 500, 502, 503),
        notes=(
            (400, "invalid_body, invalid_model or invalid_audio (the file does not decode; nothing is charged)"),
            (503, "provider_unavailable (the model is not installed here, or every worker is busy; Retry-After)"),
        ),
    )),
]
