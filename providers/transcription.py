"""Speech to text behind the gateway: the protocol every transcription adapter implements
(`Transcriber`), the values that cross it, and what each adapter declares it can do.

The route (router/transcription/route.py) resolves `provider/model` (or an alias) to a
`Transcriber` from `build_transcribers`, checks the request against its `TranscriberFeatures`
(so it never probes an adapter with `hasattr`), and awaits `transcribe`. The result is the local
engine's `Transcript` shape (text, language, duration, segments, words), which a remote adapter
fills from its upstream's answer. The local Whisper engine (providers/local_stt.py) and the remote
adapters (openai_stt.py, elevenlabs_stt.py, cartesia_stt.py on the shared stt_http.py) implement it;
`build_transcribers` in providers/__init__.py picks one per provider by its `adapter`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Protocol

from voxrouter.local_engines.whisper import Segment, Transcript, Word

__all__ = [
    "Segment",
    "Transcriber",
    "TranscriberFeatures",
    "TranscriptionError",
    "TranscriptionRequest",
    "Transcript",
    "Word",
]


@dataclasses.dataclass(frozen=True)
class TranscriberFeatures:
    """What an adapter's models can do, declared by the adapter."""

    word_timestamps: bool = False  # `timestamp_granularities[]=word`
    segment_timestamps: bool = True  # segments with start/end (srt, vtt, verbose_json)
    prompt: bool = False  # a `prompt` steers the decoding
    translation: bool = False  # can answer in English for `/v1/audio/translations`
    # The `response_format`s the model can be rendered in (None: all of them; the gateway renders
    # them from the transcript, so only a model that returns no segments is narrower).
    response_formats: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class TranscriptionRequest:
    audio: bytes  # the uploaded file as sent
    filename: str
    model: str  # the provider-native model id (what follows `provider/`)
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    tenant: str = ""  # the organization, for fair scheduling of shared workers
    request_id: str = ""
    task: Literal["transcribe", "translate"] = "transcribe"  # translate: the answer in English


class TranscriptionError(Exception):
    """A transcription that did not happen. `kind` is one of: `invalid_audio` (the client's file),
    `invalid_option` (a field the model refuses), `busy` (no worker in time), `unavailable`
    (the model is not installed or the upstream is down), `upstream` (the upstream failed),
    `rate_limited` (the upstream's 429), `auth` (the upstream refused the gateway's key),
    `timeout` (no answer in time). `retry_after` is the upstream's, in seconds, where it sent one."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after


class Transcriber(Protocol):
    id: str  # the provider id: the part of `model` before the slash

    def models(self) -> tuple[str, ...]:
        """The model ids it serves (native ids, without the provider prefix)."""
        ...

    def features(self, model: str) -> TranscriberFeatures: ...

    def unavailable_reason(self, model: str) -> str | None:
        """Why `model` cannot be served now (`model_not_installed`, `missing_api_key`), or None."""
        ...

    def check(self, request: TranscriptionRequest) -> None:
        """Refuse options the model cannot take (TranscriptionError `invalid_option`), before any
        money is held or audio decoded. No I/O, no loading."""
        ...

    async def transcribe(self, request: TranscriptionRequest) -> Transcript:
        """What is said in `request.audio`; raises TranscriptionError. Never blocks the event loop."""
        ...

    async def aclose(self) -> None:
        """Release what it holds (worker threads, connections); called once at shutdown."""
        ...
