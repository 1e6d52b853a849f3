"""Provider adapters: one module per upstream, all implementing `voxrouter.providers.base.Provider`,
each built from its `voxrouter.providers.spec.ProviderSpec` and declaring its `ProviderFeatures`."""

from __future__ import annotations

from typing import Callable

import httpx

from voxrouter.providers.base import Provider
from voxrouter.providers.spec import ProviderSpec


def _adapters() -> dict[str, Callable[..., Provider]]:
    from voxrouter.providers.cartesia import CartesiaProvider
    from voxrouter.providers.elevenlabs import ElevenLabsProvider
    from voxrouter.providers.local import LocalProvider
    from voxrouter.providers.openai import OpenAIProvider

    return {"openai": OpenAIProvider, "elevenlabs": ElevenLabsProvider, "cartesia": CartesiaProvider, "local": LocalProvider}


def build_provider(
    provider_id: str, spec: ProviderSpec, *, transport: httpx.AsyncBaseTransport | None = None
) -> Provider:
    adapters = _adapters()
    if spec.adapter not in adapters:
        raise ValueError(f"provider {provider_id!r}: unknown adapter {spec.adapter!r} (known: {sorted(adapters)})")
    return adapters[spec.adapter](provider_id, spec, transport=transport)
