"""What every remote speech-to-text adapter shares: its client and key (from the provider's
`ProviderSpec`: base URL, key, timeouts), one multipart POST, and the upstream's errors mapped to
`TranscriptionError` kinds. A subclass builds its upstream request with a pure function
(`UpstreamRequest`, testable without a socket) and reads the answer into a `Transcript`."""

from __future__ import annotations

import dataclasses
import mimetypes
from typing import Any, ClassVar

import anyio
import httpx

from voxrouter.providers._http import ErrorParser, client_for, error_from_response
from voxrouter.providers.base import ErrorKind, ProviderError
from voxrouter.providers.spec import ProviderSpec
from voxrouter.providers.transcription import Segment, Transcript, TranscriberFeatures, TranscriptionError, TranscriptionRequest, Word

# A ProviderError's kind as a TranscriptionError's.
_KINDS = {
    ErrorKind.auth: "auth",
    ErrorKind.rate_limited: "rate_limited",
    ErrorKind.timeout: "timeout",
    ErrorKind.bad_request: "invalid_option",
    ErrorKind.overloaded: "busy",
    ErrorKind.not_installed: "unavailable",
    ErrorKind.unavailable: "upstream",
}
_MAX_DETAIL = 300


@dataclasses.dataclass(frozen=True)
class UpstreamRequest:
    """One multipart POST: the path (under the provider's base URL), headers, form fields in order
    (a repeated key is a list field) and the file."""

    path: str
    headers: dict[str, str]
    fields: list[tuple[str, str]]
    filename: str
    audio: bytes
    content_type: str

    def files(self) -> dict[str, tuple[str, bytes, str]]:
        return {"file": (self.filename, self.audio, self.content_type)}


def content_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def upload_name(filename: str) -> str:
    return filename or "audio"


def words_transcript(text: str, language: str, duration: float, words: list[Word]) -> Transcript:
    """A transcript from an upstream that gives words (or nothing) but no segments: one segment
    spanning what was heard, so srt, vtt and verbose_json still have timed text."""
    end = max([duration] + [w.end for w in words]) if words or duration else 0.0
    segments = [Segment(0, words[0].start if words else 0.0, end, text.strip(), words or None)] if text.strip() else []
    return Transcript(text=text.strip(), language=language, language_probability=1.0, duration=duration, segments=segments, words=words)


class RemoteTranscriber:
    """A speech-to-text upstream on HTTP. Subclasses set `known` (model -> features) and `retired`
    (model -> why it is refused), and implement `build` and `parse`."""

    known: ClassVar[dict[str, TranscriberFeatures]]
    retired: ClassVar[dict[str, str]] = {}
    parse_error: ErrorParser

    def __init__(self, provider_id: str, spec: ProviderSpec, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.id = provider_id
        self._spec = spec
        self._api_key = spec.resolved_api_key()
        self._client = client_for(spec, transport)

    def models(self) -> tuple[str, ...]:
        return tuple(self.known) + tuple(self.retired)

    def features(self, model: str) -> TranscriberFeatures:
        return self.known.get(model, TranscriberFeatures())

    def unavailable_reason(self, model: str) -> str | None:
        if model not in self.models():
            return "unknown_model"
        return None if self._api_key else "missing_api_key"

    def check(self, request: TranscriptionRequest) -> None:
        if request.model in self.retired:
            raise TranscriptionError("invalid_option", self.retired[request.model])
        if request.task == "translate" and not self.features(request.model).translation:
            raise TranscriptionError("invalid_option", f"{request.model} cannot translate")

    def build(self, request: TranscriptionRequest, api_key: str) -> UpstreamRequest:
        raise NotImplementedError

    def parse(self, payload: Any, request: TranscriptionRequest) -> Transcript:
        raise NotImplementedError

    async def transcribe(self, request: TranscriptionRequest) -> Transcript:
        self.check(request)
        upstream = self.build(request, self._api_key or "")
        payload = await self._post(upstream)
        try:
            return self.parse(payload, request)
        except (KeyError, TypeError, ValueError) as exc:
            raise TranscriptionError("upstream", f"{self.id} answered with an unreadable transcript ({type(exc).__name__})") from None

    async def _post(self, upstream: UpstreamRequest) -> Any:
        # The whole exchange (upload included) is bounded by first_byte_timeout_s plus the read timeout.
        budget = self._spec.first_byte_timeout_s + self._spec.read_timeout_s
        try:
            with anyio.fail_after(budget):
                response = await self._client.post(
                    upstream.path, headers=upstream.headers, data=_form(upstream.fields), files=upstream.files()
                )
        except (TimeoutError, httpx.TimeoutException):
            raise TranscriptionError("timeout", f"{self.id} sent no transcript within {budget:g}s") from None
        except httpx.HTTPError as exc:
            raise TranscriptionError("upstream", f"{self.id} connection failed: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise as_transcription_error(error_from_response(self.id, response, response.content, self.parse_error))
        try:
            return response.json()
        except ValueError:
            raise TranscriptionError("upstream", f"{self.id} answered with invalid JSON") from None

    async def aclose(self) -> None:
        await self._client.aclose()


def as_transcription_error(exc: ProviderError) -> TranscriptionError:
    kind = _KINDS.get(exc.kind, "upstream")
    return TranscriptionError(kind, exc.message[:_MAX_DETAIL], retry_after=exc.retry_after)


def _form(fields: list[tuple[str, str]]) -> dict[str, str | list[str]]:
    """Ordered fields as httpx's `data`: a key given twice is sent twice."""
    form: dict[str, str | list[str]] = {}
    for key, value in fields:
        if key in form:
            existing = form[key]
            form[key] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            form[key] = value
    return form
