"""OpenAI speech to text: `POST {base}/audio/transcriptions` (and `/audio/translations`) as multipart
with a bearer key. whisper-1 is asked for `verbose_json` (segments, and words when asked) so the
gateway renders every format itself; gpt-4o-transcribe and gpt-4o-mini-transcribe answer json or
text only (no segments, no word timestamps), so they are declared json/text only."""

from __future__ import annotations

import json
from typing import Any

from voxrouter.providers.stt_http import RemoteTranscriber, UpstreamRequest, content_type, upload_name, words_transcript
from voxrouter.providers.transcription import Segment, Transcript, TranscriberFeatures, TranscriptionRequest, Word

_VERBOSE = TranscriberFeatures(word_timestamps=True, segment_timestamps=True, prompt=True, translation=True)
_TEXT_ONLY = TranscriberFeatures(word_timestamps=False, segment_timestamps=False, prompt=True, response_formats=("json", "text"))
MODELS = {"whisper-1": _VERBOSE, "gpt-4o-transcribe": _TEXT_ONLY, "gpt-4o-mini-transcribe": _TEXT_ONLY}
# verbose_json names the language in English ("english"); the gateway's wire says ISO 639-1.
_LANGUAGE_CODES = {
    "english": "en", "french": "fr", "german": "de", "spanish": "es", "italian": "it", "portuguese": "pt",
    "dutch": "nl", "japanese": "ja", "chinese": "zh", "korean": "ko", "russian": "ru", "polish": "pl",
    "turkish": "tr", "arabic": "ar", "hindi": "hi", "swedish": "sv", "ukrainian": "uk", "czech": "cs",
}


def _parse_error(body: bytes) -> str:
    error = json.loads(body).get("error") or {}
    return str(error.get("message") or error.get("code") or "")


def build_request(request: TranscriptionRequest, api_key: str, features: TranscriberFeatures) -> UpstreamRequest:
    """The upstream call for `request`: pure, no I/O."""
    translate = request.task == "translate"
    verbose = features.segment_timestamps
    fields: list[tuple[str, str]] = [("model", request.model), ("response_format", "verbose_json" if verbose else "json")]
    if request.language and not translate:
        fields.append(("language", request.language))
    if request.prompt:
        fields.append(("prompt", request.prompt))
    fields.append(("temperature", repr(float(request.temperature))))
    if verbose and not translate:
        fields.append(("timestamp_granularities[]", "segment"))
        if request.word_timestamps:
            fields.append(("timestamp_granularities[]", "word"))
    headers = {"Authorization": f"Bearer {api_key}"}
    if request.request_id:
        headers["X-Client-Request-Id"] = request.request_id
    return UpstreamRequest(
        path="/audio/translations" if translate else "/audio/transcriptions",
        headers=headers,
        fields=fields,
        filename=upload_name(request.filename),
        audio=request.audio,
        content_type=content_type(request.filename),
    )


def parse_response(payload: Any, request: TranscriptionRequest) -> Transcript:
    """verbose_json (segments, words) or json (text only) as a `Transcript`."""
    text = str(payload["text"])
    name = str(payload.get("language") or "").lower()
    language = "en" if request.task == "translate" else _LANGUAGE_CODES.get(name, name or request.language or "")
    duration = float(payload.get("duration") or 0.0)
    words = [Word(str(w["word"]).strip(), float(w["start"]), float(w["end"]), 1.0) for w in payload.get("words") or []]
    raw_segments = payload.get("segments")
    if not isinstance(raw_segments, list):
        return words_transcript(text, language, duration, words)
    segments = [
        Segment(
            index,
            float(s["start"]),
            float(s["end"]),
            str(s["text"]).strip(),
            [w for w in words if s["start"] <= w.start < s["end"]] if request.word_timestamps else None,
        )
        for index, s in enumerate(raw_segments)
    ]
    return Transcript(text=text.strip(), language=language, language_probability=1.0, duration=duration, segments=segments, words=words)


class OpenAITranscriber(RemoteTranscriber):
    known = MODELS
    parse_error = staticmethod(_parse_error)

    def build(self, request: TranscriptionRequest, api_key: str) -> UpstreamRequest:
        return build_request(request, api_key, self.features(request.model))

    def parse(self, payload: Any, request: TranscriptionRequest) -> Transcript:
        return parse_response(payload, request)
