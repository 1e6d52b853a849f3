"""pydantic models for every request and response body; `openapi.yaml` is generated from them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from providers.base import AUDIO_FORMATS

AudioFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
assert set(AudioFormat.__args__) == set(AUDIO_FORMATS)  # type: ignore[attr-defined]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class VoiceRef(_Body):
    id: str = Field(min_length=1, max_length=256)


class SpeechRequest(_Body):
    """OpenAI's speech body, plus `provider_options`; `model` is "provider/model_id" or an alias."""

    model: str = Field(min_length=1, max_length=256)
    input: str = Field(min_length=1)
    voice: str | VoiceRef
    response_format: AudioFormat = "mp3"
    speed: float | None = Field(default=None, ge=0.25, le=4.0)
    instructions: str | None = Field(default=None, max_length=4096)
    stream_format: Literal["audio", "sse"] = "audio"
    provider_options: dict[str, Any] = Field(default_factory=dict)

    @property
    def voice_id(self) -> str:
        return self.voice if isinstance(self.voice, str) else self.voice.id


class ErrorBody(_Body):
    error: str
    details: str


class VoiceOut(_Body):
    id: str
    provider: str
    name: str
    language: str
    labels: dict[str, str]
    preview_url: str | None = None
    model_compatibility: list[str]


class VoicesResponse(_Body):
    voices: list[VoiceOut]


class ModelOut(_Body):
    id: str
    response_formats: list[AudioFormat]
    max_input_chars: int
    price_micros_per_1k_chars: int


class ProviderOut(_Body):
    id: str
    name: str
    website: str
    models: list[ModelOut]


class StatusOut(_Body):
    id: str
    state: Literal["available", "degraded", "unavailable"]
    reason: Literal["missing_api_key", "circuit_open", "circuit_half_open", "model_not_installed"] | None = None


class CreditsOut(_Body):
    balance_micros: int = Field(alias="balanceMicros")
    reserved_micros: int = Field(alias="reservedMicros")


class ActivityOut(_Body):
    created_at: str = Field(alias="createdAt")
    kind: Literal["topup", "reserve", "commit", "refund"]
    micros_delta: int = Field(alias="microsDelta")
    micros_balance_after: int = Field(alias="microsBalanceAfter")
    source: str


class SpeechAudioDelta(_Body):
    type: Literal["speech.audio.delta"] = "speech.audio.delta"
    audio: str  # base64


class SpeechUsage(_Body):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class SpeechAudioDone(_Body):
    type: Literal["speech.audio.done"] = "speech.audio.done"
    usage: SpeechUsage
