"""`POST /v1/audio/speech`: auth -> parse -> reserve -> dispatch -> stream -> settle."""

from __future__ import annotations

import base64
import logging
from typing import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from providers.base import ProviderError, SynthesisRequest
from router import audio, dispatch
from router.body import read_body
from router.config import estimate_cost_micros
from router.errors import ApiError
from router.gateway import Gateway
from router.schemas import SpeechAudioDelta, SpeechAudioDone, SpeechRequest, SpeechUsage
from router.streaming import AudioStreamResponse
from router.wallet import InsufficientCredit, Reservation

logger = logging.getLogger("voxrouter.speech")


async def create_speech(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    principal = await gateway.auth.api_key(request)
    body = await read_body(request, SpeechRequest, gateway.config.server.max_body_bytes)

    target = dispatch.resolve(gateway.config, gateway.providers, body.model, body.voice_id)
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
        upstream_format = audio.upstream_format(body.response_format, capabilities.response_formats)
    except ValueError as exc:
        raise ApiError(400, "invalid_body", f"{target.label}: {exc}") from None

    cost = estimate_cost_micros(characters, target.model.price_micros_per_1k_chars)
    try:
        reservation = await gateway.wallet.reserve(principal.org_id, cost)
    except InsufficientCredit:
        raise ApiError(
            402, "insufficient_credit", f"this request needs {cost} micro-dollars of available credit; top up and retry"
        ) from None

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
    except BaseException:
        await reservation.refund()
        raise

    if upstream_format != body.response_format:
        chunks = audio.transcode(chunks, body.response_format)
    if body.stream_format == "sse":
        chunks = _sse_events(chunks, characters)
        media_type = "text/event-stream"
    else:
        media_type = audio.CONTENT_TYPES[body.response_format]
    return AudioStreamResponse(
        _settle_after(chunks, reservation, cost, target, gateway),
        media_type=media_type,
        headers={"X-VoxRouter-Provider": target.provider.id, "X-VoxRouter-Model": target.label},
    )


async def _settle_after(
    chunks: AsyncIterator[bytes], reservation: Reservation, cost: int, target: dispatch.Target, gateway: Gateway
) -> AsyncIterator[bytes]:
    """Yield the audio, then settle exactly once: commit when it was delivered or the client
    hung up after it started (the upstream has billed us by then); refund when the upstream
    or the gateway broke mid-stream. Headers are gone by then, so a failure ends the stream
    cleanly rather than raising into the server."""
    charge = False
    try:
        async for chunk in chunks:
            yield chunk
        charge = True
        gateway.health.success(target.provider.id)
    except ProviderError as exc:
        gateway.health.failure(exc.provider, exc.kind, exc.message)
        logger.warning("stream from %s broke after audio started: %s", target.label, exc.message)
    except Exception:
        logger.exception("stream from %s failed inside the gateway", target.label)
    except BaseException:  # the client went away (cancellation, generator closed)
        charge = True
        raise
    finally:
        if charge:
            await reservation.commit(cost)
        else:
            await reservation.refund()


async def _sse_events(chunks: AsyncIterator[bytes], characters: int) -> AsyncIterator[bytes]:
    """OpenAI's speech SSE shape: audio deltas, then a done event with usage."""
    async for chunk in chunks:
        event = SpeechAudioDelta(audio=base64.b64encode(chunk).decode("ascii"))
        yield b"data: " + event.model_dump_json().encode() + b"\n\n"
    # Upstreams bill characters, not tokens: report the usual ~4 characters per token.
    tokens = -(-characters // 4)
    done = SpeechAudioDone(usage=SpeechUsage(input_tokens=tokens, output_tokens=0, total_tokens=tokens))
    yield b"data: " + done.model_dump_json().encode() + b"\n\n"
