"""What the configuration says of one provider: where it is, its models, prices, limits, voices.

Provider facts (formats, prices, limits) are data here, not code in the adapters. The
gateway's whole configuration (`voxrouter.router.config.Config`) holds one `ProviderSpec`
per provider; an adapter is built from its spec alone.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from voxrouter.providers.base import AUDIO_FORMATS


class StrictModel(BaseModel):
    """A config section: an unknown key is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ModelSpec(StrictModel):
    price_micros_per_1k_chars: int = Field(ge=0)
    max_input_chars: int = Field(gt=0)
    # Billed by the audio it makes as well (or instead): reserved for the longest audio the
    # text could make (max_audio_ms_per_char at speed 1, longer when slowed down), settled on
    # the seconds measured as they stream (the upstream is asked for PCM to measure them).
    price_micros_per_audio_minute: int = Field(default=0, ge=0)
    max_audio_ms_per_char: int = Field(default=200, gt=0)
    response_formats: list[str] | None = None  # native formats; None = the provider's
    instructions: bool = False

    @field_validator("response_formats")
    @classmethod
    def _known_formats(cls, value: list[str] | None) -> list[str] | None:
        for fmt in value or []:
            if fmt not in AUDIO_FORMATS:
                raise ValueError(f"unknown response format {fmt!r}")
        return value


class VoiceSpec(StrictModel):
    id: str
    name: str
    language: str
    gender: str | None = None
    labels: dict[str, str] = {}


class BreakerSpec(StrictModel):
    """A circuit breaker per provider (per engine for local ones): `fail_max` failures in a
    row open it; after `reset_timeout_s` one trial call (or a passing free probe) may close it."""

    enabled: bool = True
    fail_max: int = Field(default=5, ge=1)
    reset_timeout_s: float = Field(default=30.0, gt=0)
    success_threshold: int = Field(default=1, ge=1)  # trial successes needed to close
    # A streak of failures opens the circuit for everyone only once this many organizations
    # took part in it; before that, the one organization whose failures would open it is
    # refused alone for reset_timeout_s (one tenant cannot open a breaker for the others).
    tenants_to_open: int = Field(default=2, ge=1)


class ProviderSpec(StrictModel):
    adapter: str  # which module in providers/ speaks this upstream's wire
    name: str
    website: str
    base_url: str = ""  # remote adapters only
    base_url_env: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None
    response_formats: list[str]
    connect_timeout_s: float = 5.0
    first_byte_timeout_s: float = 30.0
    read_timeout_s: float = 30.0
    max_connections: int = 100
    allow_unlisted_models: bool = True
    default_model: ModelSpec  # prices and limits for a model id not listed below
    models: dict[str, ModelSpec] = {}
    voices: list[VoiceSpec] = []  # a static catalog, for upstreams with no voices API
    options: dict[str, Any] = {}  # adapter-specific settings (API version pins, ...)
    breaker: BreakerSpec | None = None  # None: resilience.breaker

    def resolved_base_url(self) -> str:
        url = (self.base_url_env and os.environ.get(self.base_url_env)) or self.base_url
        return url.rstrip("/")

    def resolved_api_key(self) -> str | None:
        return (self.api_key_env and os.environ.get(self.api_key_env)) or self.api_key or None

    def model(self, model_id: str) -> ModelSpec | None:
        """A listed model's spec; an unlisted id (a new snapshot, say) is priced at this
        provider's dearest listed model, never less (None where unlisted ids are refused)."""
        if model_id in self.models:
            return self.models[model_id]
        if not self.allow_unlisted_models:
            return None
        dearest = max((m.price_micros_per_1k_chars for m in self.models.values()), default=0)
        if dearest <= self.default_model.price_micros_per_1k_chars:
            return self.default_model
        return self.default_model.model_copy(update={"price_micros_per_1k_chars": dearest})


def estimate_cost_micros(characters: int, price_micros_per_1k_chars: int) -> int:
    """ceil(chars x price / 1000), in integers only."""
    return -(-characters * price_micros_per_1k_chars // 1000)


def audio_cost_micros(audio_ms: int, price_micros_per_audio_minute: int) -> int:
    """ceil(ms x price / 60,000), in integers only."""
    return -(-audio_ms * price_micros_per_audio_minute // 60_000)


class LocalWhisperSpec(StrictModel):
    """`transcription.local:` in config: the engine's worker pool and decoding."""

    workers: int = Field(default=1, ge=1)  # transcriptions at once
    threads: int | None = Field(default=None, ge=1)  # CPU threads per transcription (None: all cores)
    max_queue: int = Field(default=8, ge=0)  # waiting beyond `workers`; more is 503
    queue_timeout_s: float = Field(default=30.0, gt=0)
    beam_size: int = Field(default=5, ge=1)
    max_audio_s: float = Field(default=1800.0, gt=0)
