"""Which transcriber serves a request's `model`: an alias (`whisper-1`) or `provider/model_id`
from `transcription.models` in config, with its per-minute price, and the price of a duration."""

from __future__ import annotations

import dataclasses
from typing import Mapping

from voxrouter.providers.spec import audio_cost_micros
from voxrouter.providers.transcription import Transcriber, TranscriberFeatures
from voxrouter.router.config import TranscriptionSpec
from voxrouter.router.http.errors import ApiError


@dataclasses.dataclass(frozen=True)
class SttTarget:
    transcriber: Transcriber
    model_id: str  # the provider-native id
    price_micros_per_minute: int

    @property
    def provider_id(self) -> str:
        return self.transcriber.id

    @property
    def label(self) -> str:
        return f"{self.transcriber.id}/{self.model_id}"

    @property
    def features(self) -> TranscriberFeatures:
        return self.transcriber.features(self.model_id)

    def cost_micros(self, audio_ms: int) -> int:
        """The price of `audio_ms` of audio: integer micro-dollars, rounded up."""
        return audio_cost_micros(audio_ms, self.price_micros_per_minute)


def resolve(spec: TranscriptionSpec, transcribers: Mapping[str, Transcriber], model: str) -> SttTarget:
    """The target of `model`, or 400 `invalid_model` (503 `provider_unavailable` when it is known
    but cannot be served here, e.g. its weights are not installed)."""
    name = spec.aliases.get(model, model)
    provider_id, _, model_id = name.partition("/")
    if not provider_id or not model_id:
        raise ApiError(400, "invalid_model", f"model must be 'provider/model_id' or a known alias, got {model!r}")
    transcriber = transcribers.get(provider_id)
    if transcriber is None:
        raise ApiError(400, "invalid_model", f"unknown_provider: {provider_id} (no speech-to-text adapter)")
    listed = spec.models.get(name)
    if listed is None or model_id not in transcriber.models():
        raise ApiError(400, "invalid_model", f"unknown_model: {name}")
    reason = transcriber.unavailable_reason(model_id)
    if reason is not None:
        raise ApiError(503, "provider_unavailable", f"{name} is unavailable ({reason})", headers={"Retry-After": "60"})
    return SttTarget(transcriber, model_id, listed.price_micros_per_minute)
