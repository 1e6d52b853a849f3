"""pydantic models for every request and response body; `openapi.yaml` is generated from them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from voxrouter.providers.base import AudioFormat


def _whole_number(value: Any) -> Any:
    """JSON Schema's integer: 1000 and 1000.0 alike, but never "1000", true or 1000.5."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class _Body(BaseModel):
    # Strict: a number is a JSON number ("speed": true or "2" is refused), a string a string.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


class VoiceRef(_Body):
    id: str = Field(min_length=1, max_length=256)


class SpeechRequest(_Body):
    """OpenAI's speech body, plus `provider_options`; `model` is "provider/model_id" or an alias."""

    # Visible ASCII: the served model is echoed in the X-VoxRouter-Model header.
    model: str = Field(min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$")
    input: str = Field(min_length=1)
    voice: str | VoiceRef
    response_format: AudioFormat = "mp3"
    speed: float | None = Field(default=None, ge=0.25, le=4.0)
    instructions: str | None = Field(default=None, max_length=4096)
    stream_format: Literal["audio", "sse"] = "audio"
    # Our extension: `speech.audio.timestamps` events among the SSE deltas (stream_format sse only).
    timestamps: Literal["word"] | None = None
    provider_options: dict[str, Any] = Field(default_factory=dict)
    # Fallbacks tried in order when `model` fails before any audio (as OpenRouter's `models`).
    models: list[Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$")]] = Field(
        default_factory=list, max_length=8
    )

    @model_validator(mode="after")
    def _timestamps_need_sse(self) -> "SpeechRequest":
        if self.timestamps is not None and self.stream_format != "sse":
            raise ValueError('timestamps need stream_format "sse"')
        return self

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
    # stripe_refund and chargeback: credit a Stripe refund or dispute took back (source "stripe")
    kind: Literal["topup", "reserve", "commit", "refund", "stripe_refund", "chargeback"]
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


class SpeechWord(_Body):
    word: str  # as written in the input, without the punctuation around it
    start: float  # seconds from the start of the audio
    end: float


class SpeechAudioTimestamps(_Body):
    type: Literal["speech.audio.timestamps"] = "speech.audio.timestamps"
    words: list[SpeechWord]


class SpeechAudioDone(_Body):
    type: Literal["speech.audio.done"] = "speech.audio.done"
    usage: SpeechUsage


# --- transcription ------------------------------------------------------------------------

TranscriptionFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]


def _absent_by_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # an optional form field is absent, not null


class TranscriptionRequest(BaseModel):
    """OpenAI's multipart transcription form. Lax where `_Body` is strict: every form value
    arrives as text ("0.2", "true"), so numbers and booleans are read from it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    file: bytes = Field(description="The audio: flac, mp3, mp4, mpeg, mpga, m4a, ogg, wav or webm.")
    model: str = Field(min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$")  # provider/model or an alias
    # A form field is text or absent, never null: the schema says so (SkipJsonSchema).
    language: str | SkipJsonSchema[None] = Field(
        default=None, min_length=1, max_length=16, json_schema_extra=_absent_by_default
    )  # ISO 639-1 ("en")
    prompt: str | SkipJsonSchema[None] = Field(default=None, max_length=2000, json_schema_extra=_absent_by_default)
    temperature: float = Field(default=0.0, ge=0.0, le=1.0)
    response_format: TranscriptionFormat = "json"
    timestamp_granularities: list[Literal["word", "segment"]] = Field(
        default_factory=list, alias="timestamp_granularities[]", max_length=2
    )
    stream: bool = False


class TranslationRequest(BaseModel):
    """OpenAI's multipart translation form: the audio heard and answered in English."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    file: bytes = Field(description="The audio: flac, mp3, mp4, mpeg, mpga, m4a, ogg, wav or webm.")
    model: str = Field(min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$")  # provider/model or an alias
    prompt: str | SkipJsonSchema[None] = Field(default=None, max_length=2000, json_schema_extra=_absent_by_default)
    temperature: float = Field(default=0.0, ge=0.0, le=1.0)
    response_format: TranscriptionFormat = "json"


class TranscriptionUsage(_Body):
    type: Literal["duration"] = "duration"
    seconds: float  # the audio's duration, as measured by the gateway


class TranscriptionOut(_Body):
    """`response_format` json (text, srt and vtt are text/plain bodies)."""

    text: str
    usage: TranscriptionUsage


class TranscriptWordOut(_Body):
    word: str
    start: float  # seconds from the start of the audio
    end: float


class TranscriptSegmentOut(_Body):
    """OpenAI's segment; the decoder statistics Whisper does not report are 0 (tokens empty)."""

    id: int
    seek: int  # the segment's start in 10 ms frames
    start: float
    end: float
    text: str
    tokens: list[int] = []
    temperature: float
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0


class TranscriptionVerboseOut(_Body):
    task: Literal["transcribe", "translate"] = "transcribe"  # translate: /v1/audio/translations
    language: str  # ISO 639-1
    duration: float
    text: str
    words: list[TranscriptWordOut] | None = None  # with timestamp_granularities[]=word
    segments: list[TranscriptSegmentOut] | None = None  # by default, or with =segment
    usage: TranscriptionUsage


class TranscriptTextDelta(_Body):
    """`stream=true`: one SSE event per piece of text, as it is heard."""

    type: Literal["transcript.text.delta"] = "transcript.text.delta"
    delta: str


class TranscriptTextDone(_Body):
    type: Literal["transcript.text.done"] = "transcript.text.done"
    text: str
    usage: TranscriptionUsage


# --- accounts -----------------------------------------------------------------------------


class RegisterRequest(_Body):
    # Explicit ranges, so the spec's regex dialect and the server's agree on every character.
    email: str = Field(min_length=3, max_length=254, pattern=r"^[^@\x00-\x20\x7f]+@[^@\x00-\x20\x7f]+$")
    password: str = Field(min_length=8, max_length=1024)
    organization: str | None = Field(default=None, min_length=1, max_length=200)


class LoginRequest(_Body):
    email: str = Field(min_length=1, max_length=254)
    password: str = Field(min_length=1, max_length=1024)


class SessionOut(_Body):
    session_token: str
    expires_at: str
    user_id: str


class RegisterOut(SessionOut):
    org_id: str


class DeviceCodeOut(_Body):
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int


class PollRequest(_Body):
    device_code: str = Field(min_length=1, max_length=256)


class DeviceDecision(_Body):
    user_code: str = Field(min_length=1, max_length=32)
    approve: bool = True


class DeviceDecisionOut(_Body):
    user_code: str
    state: Literal["approved", "denied"]


class WhoAmIOut(_Body):
    user_id: str | None
    auth: Literal["api_key", "session"]
    expires_at: str | None = None
    org_id: str
    email: str | None = None


class LogoutOut(_Body):
    revoked: bool


def _count(low: int, high: int, **schema: Any) -> Any:
    """An optional whole number from `low` to `high` (schema: extra keys shown in the spec)."""
    return Annotated[int, Field(ge=low, le=high, json_schema_extra=schema or None), BeforeValidator(_whole_number)] | None


class CreateKeyRequest(_Body):
    name: str = Field(min_length=1, max_length=100)
    max_concurrency: _count(1, 10_000) = Field(default=None, alias="maxConcurrency")
    daily_limit_micros: _count(0, 10**15) = Field(default=None, alias="dailyLimitMicros")
    monthly_limit_micros: _count(0, 10**15) = Field(default=None, alias="monthlyLimitMicros")
    # At most the organization's own limit (config `limits`; higher is refused with 400). The
    # maxima shown in the schema are the shipped defaults; the server checks the configured ones.
    requests_per_minute: _count(1, 10**7, maximum=600) = Field(default=None, alias="requestsPerMinute")
    characters_per_minute: _count(1, 10**10, maximum=600_000) = Field(default=None, alias="charactersPerMinute")


class KeyOut(_Body):
    id: str
    name: str
    key_suffix: str = Field(alias="keySuffix")
    max_concurrency: int | None = Field(alias="maxConcurrency")
    created_at: str = Field(alias="createdAt")
    last_used_at: str | None = Field(alias="lastUsedAt")
    daily_limit_micros: int | None = Field(alias="dailyLimitMicros")
    monthly_limit_micros: int | None = Field(alias="monthlyLimitMicros")
    created_by: str | None = Field(alias="createdBy")
    requests_per_minute: int | None = Field(alias="requestsPerMinute")
    characters_per_minute: int | None = Field(alias="charactersPerMinute")


class CreatedKeyOut(_Body):
    key: KeyOut
    secret: str


class RevokedKeyOut(_Body):
    id: str
    revoked: bool


# --- usage --------------------------------------------------------------------------------


class UsageTotals(_Body):
    requests: int
    cost_micros: int = Field(alias="costMicros")
    error_count: int = Field(alias="errorCount")


class ProviderUsage(_Body):
    provider: str
    requests: int
    cost_micros: int = Field(alias="costMicros")


class ErrorCodeCount(_Body):
    code: str
    count: int


class RecentUsage(_Body):
    created_at: str = Field(alias="createdAt")
    status: int | None
    provider: str | None
    model: str | None
    cost_micros: int = Field(alias="costMicros")
    code: str | None
    # The request's X-Request-Id (the client's own, or the one the gateway minted and returned);
    # null on rows recorded before request ids were kept.
    request_id: str | None = Field(alias="requestId")
    kind: Literal["speech", "transcription"] = "speech"


class UsageOut(_Body):
    totals: UsageTotals
    by_provider: list[ProviderUsage] = Field(alias="byProvider")
    by_error_code: list[ErrorCodeCount] = Field(alias="byErrorCode")
    recent: list[RecentUsage]


# --- billing ------------------------------------------------------------------------------

# Amounts are whole USD cents, as Stripe counts them. The bounds shown in the schema are the
# shipped defaults; the server checks the configured ones (config `billing:`).
Cents = Annotated[int, Field(strict=True, ge=1, le=100_000_000), BeforeValidator(_whole_number)]


class PaymentMethodOut(_Body):
    id: str
    brand: str
    last4: str
    exp_month: int = Field(alias="expMonth")
    exp_year: int = Field(alias="expYear")


class TopupRequest(_Body):
    amount_cents: Cents = Field(alias="amountCents", json_schema_extra={"minimum": 1000, "maximum": 100_000}, description="USD cents, $10 to $1,000.")
    payment_method_id: str = Field(alias="paymentMethodId", min_length=4, max_length=255, pattern=r"^pm_[A-Za-z0-9_]+$")
    # The same key (per organization) never charges twice: a retried request gets the first one's answer.
    idempotency_key: str = Field(alias="idempotencyKey", min_length=1, max_length=255)


class TopupOut(_Body):
    payment_intent_id: str
    status: str  # succeeded, or processing; the wallet is credited by the webhook when it succeeds


class CheckoutRequest(_Body):
    amount_cents: Cents = Field(alias="amountCents", json_schema_extra={"minimum": 500, "maximum": 100_000}, description="USD cents, $5 to $1,000.")


class CheckoutOut(_Body):
    id: str
    url: str
    amount_cents: int = Field(alias="amountCents")
    bonus_percent: int = Field(alias="bonusPercent")
    credit_micros: int = Field(alias="creditMicros")  # credited once the payment succeeds


class WebhookOut(_Body):
    received: bool
