"""`POST /v1/audio/speech`, top to bottom: auth -> parse -> plan -> limits -> reserve -> dispatch ->
stream -> settle. The request's bookkeeping (usage row, money, slot) is its ledger's (ledger.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from starlette.requests import Request
from starlette.responses import Response

from voxrouter.providers.base import SynthesisRequest
from voxrouter.router import schemas
from voxrouter.router.accounts.auth import Principal
from voxrouter.router.gateway import Gateway
from voxrouter.router.http.body import read_body
from voxrouter.router.http.errors import ApiError
from voxrouter.router.http.operation import ApiRoute, Operation
from voxrouter.router.http.streaming import AudioStreamResponse
from voxrouter.router.limits import policy as limits
from voxrouter.router.limits.state import Slot
from voxrouter.router.ops import metrics
from voxrouter.router.resilience import dispatch
from voxrouter.router.schemas import SpeechRequest
from voxrouter.router.speech import audio, stream
from voxrouter.router.speech.ledger import SpeechLedger
from voxrouter.router.speech.timestamps import WordAligner


_PLAN_OFF_LOOP_CHARS = 2_000  # longer texts are planned (normalised and counted) on a worker thread


async def create_speech(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    started = time.monotonic()
    principal = await gateway.auth.api_key(request)
    ledger = SpeechLedger(gateway.store, gateway.wallet, principal, request.state.request_id, started)
    body, plan, slot = await _admit(request, gateway, principal, ledger)
    ledger.hold(slot)
    try:
        await ledger.reserve(plan.reserve_micros())
        served = await _dispatch(gateway, principal, ledger, plan, body)
    except BaseException:
        await ledger.release()
        raise
    metrics.TTFB.labels(served.target.provider.id).observe(time.monotonic() - started)
    return _stream(gateway, body, served, ledger, principal.org_id)


async def _admit(
    request: Request, gateway: Gateway, principal: Principal, ledger: SpeechLedger
) -> tuple[SpeechRequest, dispatch.Plan, Slot | None]:
    """Parse, plan and count the request against its key's limits (taking a concurrency slot);
    a refusal ends the request."""
    counted = False
    try:
        body = await read_body(request, SpeechRequest, gateway.config.server.max_body_bytes)
        ledger.parsed(body)
        if body.timestamps is not None and gateway.aligner is None:
            raise ApiError(400, "invalid_body", "timestamps: the local Whisper engine that hears them is not installed")
        if dispatch.text_length(body) > _PLAN_OFF_LOOP_CHARS:  # normalising it would hold up every other stream
            plan = await asyncio.to_thread(dispatch.plan, gateway.config, gateway.providers, body)
        else:
            plan = dispatch.plan(gateway.config, gateway.providers, body)
        ledger.planned(plan)
        counted = True
        admission = await limits.admit(
            request, gateway.limits, gateway.config.limits, principal, ledger.usage.characters, take_slot=True
        )
    except ApiError as exc:
        if not counted:  # refused before it was counted: count it now, for its X-RateLimit-* headers
            with contextlib.suppress(ApiError):
                await limits.admit(request, gateway.limits, gateway.config.limits, principal)
        await ledger.refuse(exc.status, exc.code)
        raise
    return body, plan, admission.slot if admission else None


async def _dispatch(
    gateway: Gateway, principal: Principal, ledger: SpeechLedger, plan: dispatch.Plan, body: SpeechRequest
) -> dispatch.Started:
    """The first target whose audio starts; when none does, the request ends refused."""
    synthesis = SynthesisRequest(
        model="",  # each target fills in its own model, voice and format
        input=body.input,
        voice="",
        response_format="",
        speed=body.speed,
        instructions=body.instructions,
        provider_options=body.provider_options,
        tenant=principal.org_id,
        request_id=ledger.request_id,
    )
    try:
        return await gateway.dispatcher.start(plan, synthesis, ledger.attempts, principal.org_id)
    except ApiError as exc:
        await ledger.refuse(exc.status, exc.code)
        raise
    except BaseException:
        await ledger.refuse(499, "client_disconnected")
        raise


def _stream(
    gateway: Gateway, body: SpeechRequest, served: dispatch.Started, ledger: SpeechLedger, tenant: str
) -> AudioStreamResponse:
    """The audio in the client's format (and SSE framing), settled by the ledger once it is over."""
    target = served.target
    chunks = served.chunks
    meter = stream.AudioMeter()
    aligner = None
    if body.timestamps == "word" and gateway.aligner is not None:
        aligner = WordAligner(gateway.aligner, body.input, tenant=tenant)
    if target.upstream_format == "pcm":
        chunks = meter.count(chunks, target.provider.id)
        if aligner is not None:  # heard in stretches as it streams
            chunks = aligner.tap(chunks, "pcm")
    if target.upstream_format != body.response_format:
        chunks = audio.transcode(chunks, body.response_format)
    if aligner is not None and target.upstream_format != "pcm":  # heard whole, as the client gets it
        chunks = aligner.tap(chunks, body.response_format)
    if body.stream_format == "sse":
        chunks = stream.sse_events(chunks, ledger.usage.characters, aligner)
        media_type = "text/event-stream"
    else:
        media_type = audio.CONTENT_TYPES[body.response_format]
    return AudioStreamResponse(
        ledger.settle_after(chunks, served, lambda: target.cost_micros(meter.audio_ms)),
        media_type=media_type,
        headers={"X-VoxRouter-Provider": target.provider.id, "X-VoxRouter-Model": target.label},
    )


ROUTES = [
    ApiRoute("/v1/audio/speech", create_speech, method="POST", operation=Operation(
        "createSpeech",
        "Synthesize speech; the body streams raw audio (or SSE events when stream_format is sse).",
        "audio",
        body=schemas.SpeechRequest,
        errors=(400, 401, 402, 413, 500, 502, 503, 504),
    )),
]
