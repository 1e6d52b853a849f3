"""The protocol every upstream implements, and the values that cross it.

An adapter translates one `SynthesisRequest` into its vendor's wire format and yields
audio bytes as they arrive. It raises `ProviderError` with a `kind`; it never decides
retries, fallback or the HTTP status the gateway's client sees (the dispatcher does).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, AsyncIterator, Callable, Literal, Protocol, get_args

# The one raw format (s16le mono) every adapter can be asked for when the gateway must
# transcode; the local engines stream it, so its rate is defined with them.
from voxrouter.local_engines.base import PCM_SAMPLE_RATE

# Formats the gateway speaks to its clients (OpenAI's names). The one list: the API schema
# and the config validation derive theirs from it.
AudioFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
AUDIO_FORMATS: tuple[str, ...] = get_args(AudioFormat)


class ErrorKind(str, enum.Enum):
    bad_request = "bad_request"  # the client's fault; never counted against the provider
    auth = "auth"  # our provider key was rejected
    rate_limited = "rate_limited"
    unavailable = "unavailable"  # 5xx, connection refused/reset, broken stream
    timeout = "timeout"
    overloaded = "overloaded"  # a local engine has no free stream slot; not a fault of the engine
    not_installed = "not_installed"  # a local engine's weights or runtime are absent


class ProviderError(Exception):
    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.provider = provider
        self.status = status
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"ProviderError({self.kind.value}, {self.provider}, {self.message!r})"


@dataclasses.dataclass(frozen=True)
class ProviderFeatures:
    """What an adapter does besides speaking, declared by the adapter and read by the gateway
    (which never probes an adapter for methods). Per-model facts are `Capabilities`."""

    voice_listing: bool  # voices() asks the upstream (False: the catalog is the config's list)
    health_probe: bool  # probe() is a free upstream call, worth running in the background
    # Each model is an engine with its own state, circuit breaker and stream gate
    # (engine_states(), engine_loads()), rather than the provider being one upstream.
    per_model_engines: bool = False
    preload: bool = False  # start() loads engines ahead of traffic; preload_states() reports them
    cloning: bool = False  # some model speaks in a voice cloned from a reference clip
    transcription: bool = False  # speech to text
    word_timestamps: bool = False  # word timings alongside the audio


@dataclasses.dataclass(frozen=True)
class EngineLoad:
    """An engine's stream gate right now: streams it serves, streams waiting for a slot."""

    active: int
    waiting: int


# Told after each inference of a local engine: (engine id, compute seconds / audio seconds).
RtfObserver = Callable[[str, float], None]


@dataclasses.dataclass(frozen=True)
class Capabilities:
    response_formats: tuple[str, ...]  # formats the upstream produces natively
    max_input_chars: int
    sample_rates: tuple[int, ...] = (PCM_SAMPLE_RATE,)
    streaming: bool = True
    cloning: bool = False
    instructions: bool = False
    # Body fields the adapter derives from the request (text, model, format...). The
    # client's provider_options may not override them: the price was set from them.
    fixed_fields: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True)
class SynthesisRequest:
    model: str  # the provider-native model id, passed through unchanged
    input: str
    voice: str
    response_format: str  # one of the formats in Capabilities.response_formats
    speed: float | None = None
    instructions: str | None = None
    provider_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Who the call is for (an organization id): shared capacity (a local engine's stream
    # slots) is split fairly between tenants. Never sent upstream.
    tenant: str = ""
    # The gateway's request id (X-Request-Id), for upstreams that take a client's id ("": none).
    request_id: str = ""


@dataclasses.dataclass(frozen=True)
class Voice:
    id: str
    provider: str
    name: str
    language: str
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    preview_url: str | None = None
    model_compatibility: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Health:
    ok: bool
    reason: str | None = None
    latency_ms: float | None = None


class Provider(Protocol):
    id: str
    name: str
    website: str
    features: ProviderFeatures

    @property
    def configured(self) -> bool:
        """False when the provider cannot be called at all (e.g. no API key)."""
        ...

    def unavailable_reason(self, model: str) -> str | None:
        """Why `model` cannot be served right now (`missing_api_key`, `model_not_installed`), or None."""
        ...

    def capabilities(self, model: str) -> Capabilities: ...

    def spoken_characters(self, model: str, text: str) -> int:
        """How many characters `text` counts for (price, caps, per-minute limits): what the
        upstream will actually speak after normalisation, never fewer than `len(text)`."""
        ...

    def synthesize(self, request: SynthesisRequest) -> AsyncIterator[bytes]: ...

    async def voices(self) -> list[Voice]: ...

    async def probe(self) -> Health: ...

    async def aclose(self) -> None: ...

    async def start(self) -> None:
        """Work to begin once the gateway runs (local engines preload their weights)."""
        ...

    def engine_states(self) -> list[tuple[str, str | None]]:
        """(engine id, why it is unavailable or None) per engine, where `per_model_engines`."""
        ...

    def engine_loads(self) -> dict[str, EngineLoad]:
        """Each in-process engine's stream gate, for the metrics."""
        ...

    def preload_states(self) -> list[tuple[str, str | None]]:
        """(engine id, None when loaded, else why not yet) for the engines set to preload."""
        ...

    def on_engine_rtf(self, observer: RtfObserver) -> None:
        """Have `observer` told each inference's real-time factor (for the metrics)."""
        ...


class ProviderDefaults:
    """The optional part of `Provider`, as an upstream with no engines of its own answers it."""

    async def start(self) -> None:
        return None

    def engine_states(self) -> list[tuple[str, str | None]]:
        return []

    def engine_loads(self) -> dict[str, EngineLoad]:
        return {}

    def preload_states(self) -> list[tuple[str, str | None]]:
        return []

    def on_engine_rtf(self, observer: RtfObserver) -> None:
        return None
