"""The gateway's YAML configuration: providers, models, prices, aliases and voice maps.

Each provider's own section (`ProviderSpec`: formats, prices, limits, its breaker) is
defined beside the adapters, in `voxrouter.providers.spec`; the rest is the gateway's.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import yaml
from pydantic import Field, model_validator

from voxrouter.providers.spec import BreakerSpec, LocalWhisperSpec, ProviderSpec, StrictModel


class VoicePin(StrictModel):
    """A client voice name an alias serves from another model than its target's:
    `nova: {model: local/hibari, voice: heart}`."""

    model: str  # "provider/model_id"
    voice: str


class AliasTarget(StrictModel):
    model: str  # "provider/model_id"
    voices: dict[str, str | VoicePin] = {}  # client voice name -> this provider's voice id (or a pin)


class AliasSpec(StrictModel):
    """A model name without a provider prefix: one target, or an ordered fallback chain.

    `target` + `voices` is the short form of a one-element `targets` list."""

    target: str | None = None
    voices: dict[str, str | VoicePin] = {}
    targets: list[AliasTarget] = []

    @model_validator(mode="after")
    def _one_form(self) -> "AliasSpec":
        if self.target is not None:
            short = [AliasTarget(model=self.target, voices=self.voices)]
            if self.targets and self.targets != short:  # a dumped config holds both, alike
                raise ValueError("give either target (+ voices) or targets, not both")
            self.targets = short
        if not self.targets:
            raise ValueError("an alias needs a target or a targets list")
        for target in self.targets:
            pinned = [pin.model for pin in target.voices.values() if isinstance(pin, VoicePin)]
            for model_name in (target.model, *pinned):
                provider, _, model = model_name.partition("/")
                if not provider or not model:
                    raise ValueError(f"alias target must be 'provider/model_id', got {model_name!r}")
        return self


class CatalogSpec(StrictModel):
    voices_ttl_s: float = 300.0


class WalletSpec(StrictModel):
    # A hold is renewed by its process every lease/4 while the request runs; a dead
    # process's holds expire after one lease and are refunded by the next sweep.
    reservation_lease_s: float = Field(default=60.0, gt=0)
    sweep_interval_s: float = Field(default=15.0, gt=0)


class AuthSpec(StrictModel):
    key_cache_ttl_s: float = 5.0
    last_used_flush_s: float = Field(default=30.0, gt=0)  # keys' lastUsedAt is written in batches
    allow_registration: bool = True  # POST /v1/auth/register; admins can always create users
    session_days: int = Field(default=90, gt=0)
    web_session_hours: int = Field(default=12, gt=0)
    device_code_ttl_s: int = Field(default=900, gt=0)
    device_poll_interval_s: int = Field(default=5, ge=1)
    login_failures_per_email: int = Field(default=5, ge=1)  # per login_window_s
    login_failures_per_client: int = Field(default=30, ge=1)
    login_window_s: float = Field(default=900.0, gt=0)
    public_url: str | None = None  # base of verification_uri (behind a proxy)
    # Host headers trusted to build verification_uri when public_url is unset; any other
    # Host gets 400 (an attacker's Host header is never reflected into a login link).
    trusted_hosts: list[str] = ["127.0.0.1", "localhost", "[::1]"]
    login_failures_per_client_email: int = Field(default=5, ge=1)  # per login_window_s, then 429 for that pair
    login_email_backoff_s: float = Field(default=2.0, ge=0)  # short, shared: never a hard lock
    max_keys_per_org: int = Field(default=100, ge=1)  # live (unrevoked) keys
    registrations_per_client: int = Field(default=5, ge=1)  # per registration_window_s, per client address
    registration_window_s: float = Field(default=3600.0, gt=0)
    password_hash_concurrency: int = Field(default=2, ge=1)  # scrypt runs at once (16 MiB each); the rest wait


class LimitValues(StrictModel):
    requests_per_minute: int | None = Field(default=None, gt=0)
    characters_per_minute: int | None = Field(default=None, gt=0)
    max_concurrency: int | None = Field(default=None, gt=0)


class LimitsSpec(StrictModel):
    """Per-key limits: a key's own values, else its organization's here, else `defaults`."""

    enabled: bool = True
    defaults: LimitValues = LimitValues(requests_per_minute=600, characters_per_minute=600_000)
    organizations: dict[str, LimitValues] = {}  # organization id -> its keys' defaults
    slot_lease_s: float = Field(default=30.0, gt=0)  # a dead replica's concurrency slots free after this


class RetrySpec(StrictModel):
    """Retries happen only before the first audio byte has gone to the client."""

    attempts: int = Field(default=2, ge=1)  # tries per target before the next target
    backoff_s: float = Field(default=0.1, ge=0)  # full-jitter exponential backoff base
    backoff_max_s: float = Field(default=2.0, ge=0)
    max_retry_after_s: float = Field(default=5.0, ge=0)  # a longer upstream Retry-After moves on at once
    deadline_s: float = Field(default=60.0, gt=0)  # all attempts of one request, before its first byte


class ResilienceSpec(StrictModel):
    breaker: BreakerSpec = BreakerSpec()
    retry: RetrySpec = RetrySpec()
    probe_interval_s: float = Field(default=30.0, gt=0)  # free health probes (voices/models listings)


class BonusTier(StrictModel):
    min_cents: int = Field(ge=0)  # a checkout of at least this many cents...
    bonus_percent: int = Field(ge=0, le=100)  # ...is credited this much more


class BillingSpec(StrictModel):
    """Stripe billing (router/billing.py); the keys come from the environment (router/settings.py).

    Amounts are USD cents, as Stripe counts them; the wallet is credited in micro-dollars."""

    topup_min_cents: int = Field(default=1_000, gt=0)  # off-session top-ups with a saved card
    topup_max_cents: int = Field(default=100_000, gt=0)
    checkout_min_cents: int = Field(default=500, gt=0)  # browser checkout (Stripe's minimum is 50)
    checkout_max_cents: int = Field(default=100_000, gt=0)
    # A checkout is credited with the bonus of the highest tier its amount reaches.
    bonus_tiers: list[BonusTier] = [
        BonusTier(min_cents=500, bonus_percent=0),
        BonusTier(min_cents=2_000, bonus_percent=10),
        BonusTier(min_cents=5_000, bonus_percent=15),
        BonusTier(min_cents=10_000, bonus_percent=20),
    ]
    product_name: str = Field(default="VoxRouter credits", min_length=1)
    save_cards: bool = True  # checkout saves the card for later off-session top-ups
    # Where Checkout sends the browser; default: {auth.public_url or the request's base}/billing/success|cancel.
    # Stripe replaces {CHECKOUT_SESSION_ID} in the success URL.
    success_url: str | None = None
    cancel_url: str | None = None
    max_methods: int = Field(default=5, ge=1, le=100)  # saved cards listed
    timeout_s: float = Field(default=30.0, gt=0)  # per Stripe API call
    max_network_retries: int = Field(default=2, ge=0)  # the stripe library's retries (idempotent: keys on every POST)
    webhook_tolerance_s: int = Field(default=300, gt=0)  # older signed timestamps are refused (replays)

    @model_validator(mode="after")
    def _bounds(self) -> "BillingSpec":
        if self.topup_min_cents > self.topup_max_cents or self.checkout_min_cents > self.checkout_max_cents:
            raise ValueError("billing: a minimum is above its maximum")
        return self

    def bonus_percent(self, amount_cents: int) -> int:
        """The bonus of the highest tier `amount_cents` reaches (0 below every tier)."""
        reached = [tier for tier in self.bonus_tiers if amount_cents >= tier.min_cents]
        return max(reached, key=lambda tier: tier.min_cents).bonus_percent if reached else 0


class ServerSpec(StrictModel):
    """The HTTP edge (router/edge.py): what one client or connection may hold."""

    max_body_bytes: int = 1_048_576
    max_header_bytes: int = Field(default=16_384, ge=1024)  # request line + headers; larger: 431
    header_timeout_s: float = Field(default=10.0, gt=0)  # the whole request head must arrive within this
    body_timeout_s: float = Field(default=30.0, gt=0)  # the whole body must arrive within this of the head
    keep_alive_timeout_s: float = Field(default=75.0, gt=0)  # an idle connection between requests
    write_timeout_s: float = Field(default=30.0, gt=0)  # a client that reads nothing this long is dropped
    # The kernel's send buffer per client socket (0: the kernel's own autotuning, up to megabytes):
    # small enough that a client that stops reading is noticed after seconds of audio, not minutes.
    send_buffer_bytes: int = Field(default=262_144, ge=0)
    max_connections: int = Field(default=4096, ge=1)  # open connections in all; more: 503 and close
    max_connections_per_client: int = Field(default=256, ge=1)  # per client address; more: 429 and close


class TranscriptionModelSpec(StrictModel):
    price_micros_per_minute: int = Field(default=0, ge=0)  # integer USD micro-dollars per audio minute
    # Where a transcription goes when this model's upstream fails before a result (its circuit is
    # open, it answered 429/5xx/401, it timed out): other `transcription.models`, tried in order.
    fallbacks: list[str] = []


_LOCAL_FALLBACK = ["local/whisper-tiny.en"]
# As config/default.yaml ships them: a config without a `transcription:` section behaves the same.
DEFAULT_STT_MODELS = {
    "local/whisper-tiny.en": TranscriptionModelSpec(),
    "local/whisper-base": TranscriptionModelSpec(),
    "openai/whisper-1": TranscriptionModelSpec(price_micros_per_minute=6000, fallbacks=_LOCAL_FALLBACK),
    "openai/gpt-4o-transcribe": TranscriptionModelSpec(price_micros_per_minute=6000, fallbacks=_LOCAL_FALLBACK),
    "openai/gpt-4o-mini-transcribe": TranscriptionModelSpec(price_micros_per_minute=3000, fallbacks=_LOCAL_FALLBACK),
    "elevenlabs/scribe_v2": TranscriptionModelSpec(price_micros_per_minute=6700, fallbacks=_LOCAL_FALLBACK),
    "cartesia/ink-whisper": TranscriptionModelSpec(price_micros_per_minute=2300, fallbacks=_LOCAL_FALLBACK),
}


class TranscriptionSpec(StrictModel):
    """`POST /v1/audio/transcriptions`: the upload cap, the models and their per-minute prices
    (`provider/model` -> price; a model not listed here is not served), aliases without a provider
    prefix (`whisper-1` -> the local engine on a fresh install, as `tts-1` speaks locally), and the
    local Whisper engine's pool."""

    max_file_bytes: int = Field(default=26_214_400, gt=0)  # 25 MiB, OpenAI's cap; larger: 413
    models: dict[str, TranscriptionModelSpec] = Field(default_factory=lambda: dict(DEFAULT_STT_MODELS))
    aliases: dict[str, str] = {"whisper-1": "local/whisper-tiny.en"}
    local: LocalWhisperSpec = LocalWhisperSpec()

    @model_validator(mode="after")
    def _names(self) -> "TranscriptionSpec":
        for name in self.models:
            provider, _, model = name.partition("/")
            if not provider or not model:
                raise ValueError(f"transcription model must be 'provider/model_id', got {name!r}")
        for alias, target in self.aliases.items():
            if target not in self.models:
                raise ValueError(f"transcription alias {alias!r} names {target!r}, which transcription.models does not list")
        for name, model in self.models.items():
            for fallback in model.fallbacks:
                if fallback not in self.models or fallback == name:
                    raise ValueError(f"transcription model {name!r} falls back to {fallback!r}, which is not another listed model")
        return self


class Config(StrictModel):
    providers: dict[str, ProviderSpec]
    aliases: dict[str, AliasSpec] = {}
    # The same voice on several providers, for fallback: a client voice name (or
    # "provider/voice_id") -> provider id -> that provider's voice id. Without an entry,
    # a fallback target gets the first voice of the same language and gender.
    voice_map: dict[str, dict[str, str]] = {}
    limits: LimitsSpec = LimitsSpec()
    resilience: ResilienceSpec = ResilienceSpec()
    catalog: CatalogSpec = CatalogSpec()
    wallet: WalletSpec = WalletSpec()
    server: ServerSpec = ServerSpec()
    auth: AuthSpec = AuthSpec()
    billing: BillingSpec = BillingSpec()
    transcription: TranscriptionSpec = TranscriptionSpec()

    @model_validator(mode="after")
    def _aliases_name_providers(self) -> "Config":
        for name, alias in self.aliases.items():
            for target in alias.targets:
                provider = target.model.partition("/")[0]
                if provider not in self.providers:
                    raise ValueError(f"alias {name!r} names unknown provider {provider!r}")
        return self

    def breaker(self, provider_id: str) -> BreakerSpec:
        return self.providers[provider_id].breaker or self.resilience.breaker


def default_config_path() -> Path:
    return Path(str(resources.files("voxrouter.config").joinpath("default.yaml")))


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    path = path or os.environ.get("VOXROUTER_CONFIG") or default_config_path()
    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh) or {}
    return Config.model_validate(raw)

