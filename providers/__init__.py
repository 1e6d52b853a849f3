"""Provider adapters: one module per upstream, all implementing `voxrouter.providers.base.Provider`,
each built from its `voxrouter.providers.spec.ProviderSpec` and declaring its `ProviderFeatures`."""

from __future__ import annotations

from typing import Callable, Mapping

import httpx

from voxrouter.providers.base import Provider
from voxrouter.providers.spec import LocalWhisperSpec, ProviderSpec
from voxrouter.providers.transcription import Transcriber


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


def _stt_adapters() -> dict[str, Callable[..., Transcriber]]:
    from voxrouter.providers.cartesia_stt import CartesiaTranscriber
    from voxrouter.providers.elevenlabs_stt import ElevenLabsTranscriber
    from voxrouter.providers.openai_stt import OpenAITranscriber

    return {"openai": OpenAITranscriber, "elevenlabs": ElevenLabsTranscriber, "cartesia": CartesiaTranscriber}


def build_transcribers(
    local: LocalWhisperSpec,
    providers: Mapping[str, ProviderSpec],
    provider_ids: set[str] | frozenset[str] = frozenset({"local"}),
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Transcriber]:
    """The speech-to-text adapters by provider id, for the providers `provider_ids` names: the local
    Whisper engine (its model loads at the first request) and a remote adapter per provider whose
    `adapter` has one (its base URL, key and timeouts are the provider's spec)."""
    from voxrouter.providers.local_stt import LocalTranscriber

    remote = _stt_adapters()
    built: dict[str, Transcriber] = {}
    for pid in sorted(provider_ids):
        spec = providers.get(pid)
        if pid == "local" or (spec is not None and spec.adapter == "local"):
            built[pid] = LocalTranscriber(pid, local)
        elif spec is not None and spec.adapter in remote:
            built[pid] = remote[spec.adapter](pid, spec, transport=transport)
    return built
