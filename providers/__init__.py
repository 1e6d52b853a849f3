"""Provider adapters: one module per upstream, all implementing `providers.base.Provider`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import httpx

from providers.base import Provider

if TYPE_CHECKING:
    from router.config import ProviderSpec


def _adapters() -> dict[str, Callable[..., Provider]]:
    from providers.cartesia import CartesiaProvider
    from providers.elevenlabs import ElevenLabsProvider
    from providers.local import LocalProvider
    from providers.openai import OpenAIProvider

    return {"openai": OpenAIProvider, "elevenlabs": ElevenLabsProvider, "cartesia": CartesiaProvider, "local": LocalProvider}


def build_provider(
    provider_id: str, spec: "ProviderSpec", *, transport: httpx.AsyncBaseTransport | None = None
) -> Provider:
    adapters = _adapters()
    if spec.adapter not in adapters:
        raise ValueError(f"provider {provider_id!r}: unknown adapter {spec.adapter!r} (known: {sorted(adapters)})")
    return adapters[spec.adapter](provider_id, spec, transport=transport)
