"""Provider adapters: one module per upstream, all implementing `voxrouter.providers.base.Provider`,
each built from its `voxrouter.providers.spec.ProviderSpec` and declaring its `ProviderFeatures`."""

from __future__ import annotations

from typing import Callable, Iterable

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


def build_transcribers(local: LocalWhisperSpec, provider_ids: Iterable[str] = ("local",)) -> dict[str, Transcriber]:
    """The speech-to-text adapters by provider id: the local Whisper engine for now (its model
    loads at the first request). Remote adapters join here, each declaring its features."""
    from voxrouter.providers.local_stt import LocalTranscriber

    return {pid: LocalTranscriber(pid, local) for pid in provider_ids if pid == "local"}
