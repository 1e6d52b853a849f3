"""`POST /v1/audio/speech`: auth -> parse -> plan -> limits -> reserve -> dispatch -> stream -> settle.

Every request that gets past authentication leaves one usage row, failed ones included.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from typing import AsyncIterator, Callable

import anyio
from starlette.requests import Request
from starlette.responses import Response

from voxrouter.providers.base import PCM_SAMPLE_RATE, ProviderError, SynthesisRequest
from voxrouter.router.accounts.auth import Principal
from voxrouter.router.billing.wallet import InsufficientCredit, Reservation, SpendLimitExceeded, record_usage, spend_limits
from voxrouter.router.gateway import Gateway
from voxrouter.router.http.body import read_body
from voxrouter.router.http.errors import ApiError
from voxrouter.router.http.streaming import AudioStreamResponse
from voxrouter.router.limits import policy as limits
from voxrouter.router.limits.state import Slot
from voxrouter.router.ops import metrics
from voxrouter.router.resilience import dispatch
from voxrouter.router.schemas import SpeechAudioDelta, SpeechAudioDone, SpeechRequest, SpeechUsage
from voxrouter.router.speech import audio
from voxrouter.router.store.base import UsageEnd, UsageStart

logger = logging.getLogger("voxrouter.speech")


async def create_speech(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    started = time.monotonic()
    principal = await gateway.auth.api_key(request)
    usage = UsageStart(
        request_id=f"req_{uuid.uuid4().hex}", org_id=principal.org_id, key_id=principal.key_id, provider=None, model=None, characters=0
    )
    attempts: list[dispatch.Attempt] = []
    counted = False
    try:
        body = await read_body(request, SpeechRequest, gateway.config.server.max_body_bytes)
        usage = dataclasses.replace(usage, characters=len(body.input), model=body.model)
        plan = dispatch.plan(gateway.config, gateway.providers, body)
        attempts = list(plan.skipped)
        usage = dataclasses.replace(
            usage, provider=plan.targets[0].provider.id, model=plan.targets[0].label, characters=plan.characters
        )
        counted = True
        admission = await limits.admit(
            request, gateway.limits, gateway.config.limits, principal, usage.characters, take_slot=True
        )
    except ApiError as exc:
        if not counted:  # refused before it was counted: count it now, for its X-RateLimit-* headers
            with contextlib.suppress(ApiError):
                await limits.admit(request, gateway.limits, gateway.config.limits, principal)
        await record_usage(gateway.store, usage, _outcome(started, exc.status, exc.code, 0, attempts, usage=usage))
        raise
    slot = admission.slot if admission else None

    try:
        cost = plan.reserve_micros()
        reservation = await _reserve(gateway, principal, usage, cost, started)
        synthesis = SynthesisRequest(
            model="",  # each target fills in its own model, voice and format
            input=body.input,
            voice="",
            response_format="",
            speed=body.speed,
            instructions=body.instructions,
            provider_options=body.provider_options,
            tenant=principal.org_id,
        )
        try:
            served = await gateway.dispatcher.start(plan, synthesis, attempts, principal.org_id)
        except ApiError as exc:
            await reservation.refund(_outcome(started, exc.status, exc.code, 0, attempts, usage=usage))
            raise
        except BaseException:
            await reservation.refund(_outcome(started, 499, "client_disconnected", 0, attempts, usage=usage))
            raise
    except BaseException:
        await _release(slot)
        raise

    target = served.target
    metrics.TTFB.labels(target.provider.id).observe(time.monotonic() - started)
    chunks = served.chunks
    meter = _AudioMeter()
    if target.upstream_format == "pcm":
        chunks = meter.count(chunks, target.provider.id)
    if target.upstream_format != body.response_format:
        chunks = audio.transcode(chunks, body.response_format)
    if body.stream_format == "sse":
        chunks = _sse_events(chunks, usage.characters)
        media_type = "text/event-stream"
    else:
        media_type = audio.CONTENT_TYPES[body.response_format]
    return AudioStreamResponse(
        _settle_after(chunks, served, reservation, slot, lambda: target.cost_micros(meter.audio_ms), attempts, started),
        media_type=media_type,
        headers={"X-VoxRouter-Provider": target.provider.id, "X-VoxRouter-Model": target.label},
    )


async def _release(slot: Slot | None) -> None:
    if slot is not None:
        with anyio.CancelScope(shield=True):
            await slot.release()


async def _reserve(gateway: Gateway, principal: Principal, usage: UsageStart, cost: int, started: float) -> Reservation:
    limits = None
    if principal.key_id and (principal.daily_limit_micros is not None or principal.monthly_limit_micros is not None):
        limits = spend_limits(principal.key_id, principal.daily_limit_micros, principal.monthly_limit_micros)
    try:
        return await gateway.wallet.reserve(usage, cost, limits)
    except InsufficientCredit:
        error = ApiError(
            402, "insufficient_credit", f"this request needs {cost} micro-dollars of available credit; top up and retry"
        )
    except SpendLimitExceeded as exc:
        error = ApiError(
            402,
            "spend_limit_exceeded",
            f"this request ({cost} micro-dollars) would pass the key's {exc.period} spend limit of {exc.limit_micros}",
        )
    await record_usage(gateway.store, usage, _outcome(started, error.status, error.code, 0, [], usage=usage))
    raise error


def _outcome(
    started: float,
    status: int,
    code: str | None,
    cost: int,
    attempts: list[dispatch.Attempt],
    served: dispatch.Target | None = None,
    usage: UsageStart | None = None,
) -> UsageEnd:
    """How the request ended, for its usage row; counted in the metrics as it is built (once per request)."""
    provider = served.provider.id if served else (usage.provider if usage else None) or "none"
    metrics.REQUESTS.labels(provider, served.metric_label if served else "none", str(status), code or "").inc()
    metrics.DURATION.labels(provider).observe(time.monotonic() - started)
    for attempt in attempts:
        if attempt.outcome != "served":
            metrics.FALLBACKS.labels(attempt.provider, attempt.reason or "unknown").inc()
    if cost and served:
        metrics.COST.labels(provider).inc(cost)
    if status == 200 and usage is not None:
        metrics.CHARACTERS.labels(provider).inc(usage.characters)
    return UsageEnd(
        status=status,
        error_code=code,
        cost_micros=cost,
        latency_ms=round((time.monotonic() - started) * 1000),
        attempts=json.dumps([a.as_dict() for a in attempts]),
        provider=served.provider.id if served else None,
        model=served.label if served else None,
    )


async def _settle_after(
    chunks: AsyncIterator[bytes],
    served: dispatch.Started,
    reservation: Reservation,
    slot: Slot | None,
    price: Callable[[], int],
    attempts: list[dispatch.Attempt],
    started: float,
) -> AsyncIterator[bytes]:
    """Yield the audio, then settle exactly once: commit when it was delivered or the client
    hung up after it started (the upstream has billed us by then); refund when the upstream
    or the gateway broke mid-stream. `price` is asked once the stream is over (models billed
    by audio are charged for what was measured, never more than was held). Headers are gone by then, so a failure ends the stream
    cleanly (no other provider's audio is spliced on) rather than raising into the server."""
    target = served.target
    charge = False
    status, code = 200, None
    try:
        async for chunk in chunks:
            yield chunk
        charge = True
        served.ticket.succeeded()
    except ProviderError as exc:
        served.ticket.failed(exc)
        code = "upstream_error"
        attempts[-1] = dataclasses.replace(attempts[-1], outcome="failed", reason=f"mid_stream_{exc.kind.value}")
        logger.warning("stream from %s broke after audio started: %s", target.label, exc.message)
    except Exception:
        served.ticket.abandoned()
        code = "internal_error"
        attempts[-1] = dataclasses.replace(attempts[-1], outcome="failed", reason="internal_error")
        logger.exception("stream from %s failed inside the gateway", target.label)
    except BaseException:  # the client went away (cancellation, generator closed)
        served.ticket.succeeded()  # the upstream was delivering
        charge = True
        status, code = 499, "client_disconnected"
        raise
    finally:
        await _release(slot)
        cost = price() if charge else 0
        outcome = _outcome(started, status, code, cost, attempts, target, reservation.usage)
        if charge:
            await reservation.commit(cost, outcome)
        else:
            await reservation.refund(outcome)


class _AudioMeter:
    """Audio of a PCM stream (16-bit mono at 24 kHz) as it passes: for the metrics, and for
    the bill of models priced by audio length."""

    def __init__(self) -> None:
        self.pcm_bytes = 0

    @property
    def audio_ms(self) -> int:
        return -(-self.pcm_bytes * 1000 // (2 * PCM_SAMPLE_RATE))

    async def count(self, chunks: AsyncIterator[bytes], provider: str) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self.pcm_bytes += len(chunk)
            metrics.AUDIO_SECONDS.labels(provider).inc(len(chunk) / (2 * PCM_SAMPLE_RATE))
            yield chunk


async def _sse_events(chunks: AsyncIterator[bytes], characters: int) -> AsyncIterator[bytes]:
    """OpenAI's speech SSE shape: audio deltas, then a done event with usage."""
    async for chunk in chunks:
        event = SpeechAudioDelta(audio=base64.b64encode(chunk).decode("ascii"))
        yield b"data: " + event.model_dump_json().encode() + b"\n\n"
    # Upstreams bill characters, not tokens: report the usual ~4 characters per token.
    tokens = -(-characters // 4)
    done = SpeechAudioDone(usage=SpeechUsage(input_tokens=tokens, output_tokens=0, total_tokens=tokens))
    yield b"data: " + done.model_dump_json().encode() + b"\n\n"
