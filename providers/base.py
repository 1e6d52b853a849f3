"""The protocol every upstream implements, and the values that cross it.

An adapter translates one `SynthesisRequest` into its vendor's wire format and yields
audio bytes as they arrive. It raises `ProviderError` with a `kind`; it never decides
retries, fallback or the HTTP status the gateway's client sees (the dispatcher does).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, AsyncIterator, Protocol

# Formats the gateway speaks to its clients (OpenAI's names).
AUDIO_FORMATS: tuple[str, ...] = ("mp3", "opus", "aac", "flac", "wav", "pcm")
# The one raw format every adapter can be asked for when the gateway must transcode.
PCM_SAMPLE_RATE = 24_000


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
