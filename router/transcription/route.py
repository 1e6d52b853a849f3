"""`POST /v1/audio/transcriptions` and `POST /v1/audio/translations` (OpenAI's wire), top to bottom:
auth -> parse -> resolve (the model and its fallbacks) -> limits -> measure -> reserve (the dearest
target) -> transcribe (dispatch.py: through the circuit breakers, failing over) -> settle (on the
target that served) -> respond. The request's bookkeeping (usage
row, money, slot) is its ledger's (ledger.py); the duration is measured by decoding the upload
(duration.py), the response rendered by formats.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response

from voxrouter.providers.transcription import Transcript, TranscriptionError, TranscriptionRequest
from voxrouter.router import schemas
from voxrouter.router.accounts.auth import Principal
from voxrouter.router.gateway import Gateway
from voxrouter.router.http.errors import ApiError
from voxrouter.router.http.operation import ApiRoute, Operation
from voxrouter.router.limits import policy as limits
from voxrouter.router.transcription import dispatch, duration, formats
from voxrouter.router.transcription.form import read_form
from voxrouter.router.transcription.ledger import TranscriptionLedger
from voxrouter.router.transcription.models import SttTarget, chain

Task = Literal["transcribe", "translate"]

AnyForm = schemas.TranscriptionRequest | schemas.TranslationRequest


async def create_transcription(request: Request) -> Response:
    return await _serve(request, "transcribe")


async def create_translation(request: Request) -> Response:
    """`POST /v1/audio/translations`: the same path; the answer is English, from a model that can
    translate (openai/whisper-1, a multilingual local model; never tiny.en)."""
    return await _serve(request, "translate")


async def _serve(request: Request, task: Task) -> Response:
    gateway: Gateway = request.app.state.gateway
    started = time.monotonic()
    principal = await gateway.auth.api_key(request)
    ledger = TranscriptionLedger(gateway.store, gateway.wallet, principal, request.state.request_id, started)
    form, targets, job = await _admit(request, gateway, principal, ledger, task)
    try:
        ledger.measured(await _measure(gateway, form.file))
        await ledger.reserve(max(t.cost_micros(ledger.audio_ms) for t in targets))
        served = await dispatch.transcribe(gateway.health, targets, job, principal.org_id, ledger.attempts)
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
    ledger.served(served.target.provider_id, served.target.label)
    await ledger.settle(served.target.cost_micros(ledger.audio_ms))
    return _respond(form, served.transcript, served.target, ledger.audio_ms, task)


async def _admit(
    request: Request, gateway: Gateway, principal: Principal, ledger: TranscriptionLedger, task: Task
) -> tuple[AnyForm, list[SttTarget], TranscriptionRequest]:
    """Parse the form, resolve its model and fallbacks, check its options and count the request
    against its key's limits (taking a concurrency slot); a refusal ends the request."""
    counted = False
    spec = gateway.config.transcription
    schema = schemas.TranslationRequest if task == "translate" else schemas.TranscriptionRequest
    try:
        form, filename = await read_form(request, spec.max_file_bytes, schema)
        targets = chain(spec, gateway.transcribers, form.model)
        ledger.resolved(targets[0].provider_id, targets[0].label)
        job = _job(targets[0], form, filename, principal, ledger, task)
        targets = _usable(targets, form, job)
        counted = True
        admission = await limits.admit(request, gateway.limits, gateway.config.limits, principal, take_slot=True)
    except ApiError as exc:
        if not counted:  # refused before it was counted: count it now, for its X-RateLimit-* headers
            with contextlib.suppress(ApiError):
                await limits.admit(request, gateway.limits, gateway.config.limits, principal)
        await ledger.refuse(exc.status, exc.code)
        raise
    ledger.hold(admission.slot if admission else None)
    return form, targets, job


def _usable(targets: list[SttTarget], form: AnyForm, job: TranscriptionRequest) -> list[SttTarget]:
    """The targets that can take the request's options: the first must (its refusal is the 400),
    a fallback that cannot is left out."""
    usable = []
    for index, target in enumerate(targets):
        try:
            _check(target, form, dataclasses.replace(job, model=target.model_id))
        except ApiError:
            if index == 0:
                raise
            continue
        usable.append(target)
    return usable


def _check(target: SttTarget, form: AnyForm, job: TranscriptionRequest) -> None:
    """The options the target's model cannot take: 400 before any audio is decoded or money held."""
    features = target.features
    if job.task == "translate" and not features.translation:
        hint = "; it hears English only (install the multilingual local/whisper-base)" if target.model_id.endswith(".en") else ""
        raise ApiError(400, "invalid_body", f"model: {target.label} cannot translate{hint}")
    if features.response_formats is not None and form.response_format not in features.response_formats:
        raise ApiError(
            400, "invalid_body",
            f"response_format: {target.label} answers {' or '.join(features.response_formats)} only, not {form.response_format}",
        )
    if job.word_timestamps and not features.word_timestamps:
        raise ApiError(400, "invalid_body", f"timestamp_granularities[]: {target.label} has no word timestamps")
    if form.prompt and not features.prompt:
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
    target: SttTarget, form: AnyForm, filename: str, principal: Principal, ledger: TranscriptionLedger, task: Task
) -> TranscriptionRequest:
    transcribing = isinstance(form, schemas.TranscriptionRequest)
    return TranscriptionRequest(
        audio=form.file,
        filename=filename,
        model=target.model_id,
        language=form.language if isinstance(form, schemas.TranscriptionRequest) else None,
        prompt=form.prompt,
        temperature=form.temperature,
        word_timestamps=transcribing and "word" in form.timestamp_granularities,  # type: ignore[union-attr]
        tenant=principal.org_id,
        request_id=ledger.request_id,
        task=task,
    )


def _respond(form: AnyForm, transcript: Transcript, target: SttTarget, audio_ms: int, task: Task) -> Response:
    headers = {"X-VoxRouter-Provider": target.provider_id, "X-VoxRouter-Model": target.label}
    granularities: list[str] = []
    if isinstance(form, schemas.TranscriptionRequest):
        if form.stream:
            body = b"".join(formats.sse_events(transcript, audio_ms))
            return Response(body, media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"})
        granularities = list(form.timestamp_granularities)
    rendered = formats.render(transcript, form.response_format, granularities, audio_ms, form.temperature, task)
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
        errors=(400, 401, 402, 413, 500, 502, 503, 504),
        notes=(
            (400, "invalid_body, invalid_model or invalid_audio (the file does not decode; nothing is charged)"),
            (502, "upstream_error (the upstream failed or refused the gateway's credentials, and no fallback served)"),
            (503, "provider_unavailable (not installed here, no key, every worker busy, the upstream's 429 or an open circuit; Retry-After)"),
        ),
    )),
    ApiRoute("/v1/audio/translations", create_translation, method="POST", operation=Operation(
        "createTranslation",
        "Translate audio into English text (OpenAI's multipart form), on a model that can: openai/whisper-1 "
        "or a multilingual local model (local/whisper-base; tiny.en cannot). json or verbose_json, "
        "text/srt/vtt as text/plain. Priced per audio minute.",
        schemas.TranscriptionOut,
        body=schemas.TranslationRequest,
        body_media_type="multipart/form-data",
        response_variants=(schemas.TranscriptionVerboseOut,),
        text_media_types=("text/plain",),
        errors=(400, 401, 402, 413, 500, 502, 503, 504),
        notes=(
            (400, "invalid_body (the model cannot translate, e.g. an English-only one), invalid_model or invalid_audio"),
            (503, "provider_unavailable (not installed here, no key, busy, the upstream's 429 or an open circuit; Retry-After)"),
        ),
    )),
]
