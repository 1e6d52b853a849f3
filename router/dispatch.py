"""From a model string to a started audio stream.

`resolve` turns "provider/model_id" (or an alias) into a target; `start` calls the
target's adapter and waits for the first audio bytes, so that any failure before
audio starts becomes a proper HTTP error instead of a broken stream.
"""

from __future__ import annotations

import dataclasses
from typing import AsyncIterator

import anyio

from providers.base import ErrorKind, Provider, ProviderError, SynthesisRequest
from router.config import Config, ModelSpec
from router.errors import ApiError
from router.health import HealthBoard


@dataclasses.dataclass(frozen=True)
class Target:
    provider: Provider
    model_id: str
    voice: str
    model: ModelSpec

    @property
    def label(self) -> str:
        return f"{self.provider.id}/{self.model_id}"


def resolve(config: Config, providers: dict[str, Provider], model: str, voice: str) -> Target:
    if "/" in model:
        provider_id, _, model_id = model.partition("/")
    elif model in config.aliases:
        alias = config.aliases[model]
        provider_id, _, model_id = alias.target.partition("/")
        voice = alias.voices.get(voice, voice)
    else:
        raise ApiError(400, "invalid_model", f"model must be 'provider/model_id' or a known alias, got {model!r}")
    if not provider_id or not model_id:
        raise ApiError(400, "invalid_model", f"model must be 'provider/model_id', got {model!r}")
    provider = providers.get(provider_id)
    if provider is None:
        raise ApiError(400, "invalid_model", f"unknown_provider: {provider_id}")
    spec = config.providers[provider_id].model(model_id)
    if spec is None:
        raise ApiError(400, "invalid_model", f"unknown_model: {provider_id}/{model_id}")
    reason = provider.unavailable_reason(model_id)
    if reason == "missing_api_key":  # refused before any money is held
        raise ApiError(503, "provider_unavailable", f"{provider_id} is not configured (missing_api_key)")
    if reason is not None:
        raise ApiError(503, "provider_unavailable", f"{provider_id}/{model_id} is unavailable ({reason})", headers={"Retry-After": "60"})
    return Target(provider=provider, model_id=model_id, voice=voice, model=spec)


def api_error(exc: ProviderError) -> ApiError:
    """The status a client sees for an upstream failure that happened before any audio."""
    if exc.kind is ErrorKind.bad_request:
        return ApiError(400, "invalid_body", f"{exc.provider} rejected the request: {exc.message}")
    headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after is not None else None
    if exc.kind is ErrorKind.overloaded:
        if exc.status == 503:
            return ApiError(503, "provider_unavailable", exc.message, headers=headers)
        return ApiError(429, "concurrency_limited", exc.message, headers=headers)
    if exc.kind is ErrorKind.not_installed:
        return ApiError(503, "provider_unavailable", exc.message, headers={"Retry-After": "60"})
    if exc.kind is ErrorKind.timeout:
        return ApiError(504, "upstream_error", exc.message, headers=headers)
    return ApiError(502, "upstream_error", exc.message, headers=headers)


async def start(target: Target, request: SynthesisRequest, health: HealthBoard) -> AsyncIterator[bytes]:
    """Begin synthesis and return the stream once its first bytes exist."""
    provider = target.provider
    chunks = provider.synthesize(request)
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        exc = ProviderError(ErrorKind.unavailable, f"{provider.id} returned no audio", provider=provider.id)
        health.failure(provider.id, exc.kind, exc.message)
        raise api_error(exc) from None
    except ProviderError as exc:
        health.failure(provider.id, exc.kind, exc.message)
        raise api_error(exc) from None
    except BaseException:
        await chunks.aclose()
        raise
    return _continue(first, chunks)


async def _continue(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        with anyio.CancelScope(shield=True):
            await rest.aclose()  # type: ignore[attr-defined]
