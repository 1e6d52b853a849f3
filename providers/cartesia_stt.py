"""Cartesia speech to text: `POST {base}/stt`, multipart `file`, `model` (`ink-whisper`), `language`,
`timestamp_granularities[]=word`, with `Authorization: Bearer` and the `cartesia-version` the current
SDK sends. The answer is `{type: "transcript", text, language, duration, words: [{word, start, end}]}`."""

from __future__ import annotations

from typing import Any

from voxrouter.providers.cartesia import _parse_error
from voxrouter.providers.stt_http import RemoteTranscriber, UpstreamRequest, content_type, upload_name, words_transcript
from voxrouter.providers.transcription import Transcript, TranscriberFeatures, TranscriptionRequest, Word

STT_API_VERSION = "2026-08-14"  # cartesia-python 4.2's
MODELS = {"ink-whisper": TranscriberFeatures(word_timestamps=True, segment_timestamps=True, prompt=False)}


def build_request(request: TranscriptionRequest, api_key: str, api_version: str = STT_API_VERSION) -> UpstreamRequest:
    """The upstream call for `request`: pure, no I/O. Word timing is always asked for (the gateway
    builds segments from it)."""
    fields: list[tuple[str, str]] = [("model", request.model), ("timestamp_granularities[]", "word")]
    if request.language:
        fields.append(("language", request.language))
    return UpstreamRequest(
        path="/stt",
        headers={"Authorization": f"Bearer {api_key}", "cartesia-version": api_version},
        fields=fields,
        filename=upload_name(request.filename),
        audio=request.audio,
        content_type=content_type(request.filename),
    )


def parse_response(payload: Any, request: TranscriptionRequest) -> Transcript:
    if payload.get("type", "transcript") != "transcript":
        raise ValueError(f"unexpected message type {payload.get('type')!r}")
    words = [Word(str(w["word"]).strip(), float(w["start"]), float(w["end"]), 1.0) for w in payload.get("words") or []]
    language = str(payload.get("language") or request.language or "")
    return words_transcript(str(payload["text"]), language, float(payload.get("duration") or 0.0), words)


class CartesiaTranscriber(RemoteTranscriber):
    known = MODELS
    parse_error = staticmethod(_parse_error)

    def build(self, request: TranscriptionRequest, api_key: str) -> UpstreamRequest:
        version = str(self._spec.options.get("stt_api_version") or STT_API_VERSION)
        return build_request(request, api_key, version)

    def parse(self, payload: Any, request: TranscriptionRequest) -> Transcript:
        return parse_response(payload, request)
