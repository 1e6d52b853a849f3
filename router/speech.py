"""`POST /v1/audio/speech`: auth -> parse -> limits -> reserve -> dispatch -> stream -> settle.

Every request that gets past authentication leaves one usage row, failed ones included.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import time
import uuid
from typing import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from providers.base import ProviderError, SynthesisRequest
from router import audio, dispatch
from router.auth import Principal
from router.body import read_body
from router.config import estimate_cost_micros
from router.errors import ApiError
from router.gateway import Gateway
from router.limits import Slot
from router.schemas import SpeechAudioDelta, SpeechAudioDone, SpeechRequest, SpeechUsage
from router.store.base import UsageEnd, UsageStart
from router.streaming import AudioStreamResponse
from router.wallet import InsufficientCredit, Reservation, SpendLimitExceeded, record_usage, spend_limits

logger = logging.getLogger("voxrouter.speech")


async def create_speech(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    started = time.monotonic()
    principal = await gateway.auth.api_key(request)
    usage = UsageStart(
        request_id=f"req_{uuid.uuid4().hex}", org_id=principal.org_id, key_id=principal.key_id, provider=None, model=None, characters=0
    )
    try:
        body = await read_body(request, SpeechRequest, gateway.config.server.max_body_bytes)
        usage = dataclasses.replace(usage, characters=len(body.input), model=body.model)
        target = dispatch.resolve(gateway.config, gateway.providers, body.model, body.voice_id)
        usage = dataclasses.replace(usage, provider=target.provider.id, model=target.label)
        upstream_format = _check_request(body, target)
        slot = gateway.slots.acquire(principal.key_id or "", principal.max_concurrency)
    except ApiError as exc:
        await record_usage(gateway.store, usage, _outcome(started, exc.status, exc.code, 0))
        raise

    with slot.released_on_error():
        cost = estimate_cost_micros(usage.characters, target.model.price_micros_per_1k_chars)
        reservation = await _reserve(gateway, principal, usage, cost, started)
        synthesis = SynthesisRequest(
            model=target.model_id,
            input=body.input,
            voice=target.voice,
            response_format=upstream_format,
            speed=body.speed,
            instructions=body.instructions,
            provider_options=body.provider_options,
        )
        try:
            chunks = await dispatch.start(target, synthesis, gateway.health)
        except ApiError as exc:
            await reservation.refund(_outcome(started, exc.status, exc.code, 0, target, exc.code))
            raise
        except BaseException:
            await reservation.refund(_outcome(started, 499, "client_disconnected", 0, target, "cancelled"))
            raise

    if upstream_format != body.response_format:
        chunks = audio.transcode(chunks, body.response_format)
    if body.stream_format == "sse":
        chunks = _sse_events(chunks, usage.characters)
        media_type = "text/event-stream"
    else:
        media_type = audio.CONTENT_TYPES[body.response_format]
    return AudioStreamResponse(
        _settle_after(chunks, reservation, slot, cost, target, gateway, started),
        media_type=media_type,
        headers={"X-VoxRouter-Provider": target.provider.id, "X-VoxRouter-Model": target.label},
    )


def _check_request(body: SpeechRequest, target: dispatch.Target) -> str:
    """What the target can't do is a 400 before any money is held; returns the upstream format."""
    capabilities = target.provider.capabilities(target.model_id)
    characters = len(body.input)
    if characters > capabilities.max_input_chars:
        raise ApiError(
            400,
            "invalid_body",
            f"input is {characters} characters; {target.label} accepts at most {capabilities.max_input_chars}",
        )
    overridden = sorted(capabilities.fixed_fields & body.provider_options.keys())
    if overridden:
        raise ApiError(
            400, "invalid_body", f"provider_options may not set {', '.join(overridden)}: use the request's own fields"
        )
    try:
        return audio.upstream_format(body.response_format, capabilities.response_formats)
    except ValueError as exc:
        raise ApiError(400, "invalid_body", f"{target.label}: {exc}") from None


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
    await record_usage(gateway.store, usage, _outcome(started, error.status, error.code, 0))
    raise error


def _outcome(
    started: float, status: int, code: str | None, cost: int, target: dispatch.Target | None = None, result: str = "served"
) -> UsageEnd:
    attempts = [{"provider": target.provider.id, "model": target.model_id, "outcome": result}] if target else []
    return UsageEnd(
        status=status,
        error_code=code,
        cost_micros=cost,
        latency_ms=round((time.monotonic() - started) * 1000),
        attempts=json.dumps(attempts),
    )


async def _settle_after(
    chunks: AsyncIterator[bytes],
    reservation: Reservation,
    slot: Slot,
    cost: int,
    target: dispatch.Target,
    gateway: Gateway,
    started: float,
) -> AsyncIterator[bytes]:
    """Yield the audio, then settle exactly once: commit when it was delivered or the client
    hung up after it started (the upstream has billed us by then); refund when the upstream
    or the gateway broke mid-stream. Headers are gone by then, so a failure ends the stream
    cleanly rather than raising into the server."""
    charge = False
    status, code = 200, None
    try:
        async for chunk in chunks:
            yield chunk
        charge = True
        gateway.health.success(target.provider.id)
    except ProviderError as exc:
        gateway.health.failure(exc.provider, exc.kind, exc.message)
        code = "upstream_error"
        logger.warning("stream from %s broke after audio started: %s", target.label, exc.message)
    except Exception:
        code = "internal_error"
        logger.exception("stream from %s failed inside the gateway", target.label)
    except BaseException:  # the client went away (cancellation, generator closed)
        charge = True
        status, code = 499, "client_disconnected"
        raise
    finally:
        slot.release()
        outcome = _outcome(started, status, code, cost if charge else 0, target, code or "served")
        if charge:
            await reservation.commit(cost, outcome)
        else:
            await reservation.refund(outcome)


async def _sse_events(chunks: AsyncIterator[bytes], characters: int) -> AsyncIterator[bytes]:
    """OpenAI's speech SSE shape: audio deltas, then a done event with usage."""
    async for chunk in chunks:
        event = SpeechAudioDelta(audio=base64.b64encode(chunk).decode("ascii"))
        yield b"data: " + event.model_dump_json().encode() + b"\n\n"
    # Upstreams bill characters, not tokens: report the usual ~4 characters per token.
    tokens = -(-characters // 4)
    done = SpeechAudioDone(usage=SpeechUsage(input_tokens=tokens, output_tokens=0, total_tokens=tokens))
    yield b"data: " + done.model_dump_json().encode() + b"\n\n"
