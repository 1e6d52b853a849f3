"""ElevenLabs Scribe: `POST {base}/v1/speech-to-text`, multipart `file` + `model_id` (`scribe_v2`;
`scribe_v1` is retired and refused before any upload), `timestamps_granularity`, `language_code`,
with an `xi-api-key`. The answer is `{language_code, language_probability, text, words: [{text,
start, end, type: word | spacing | audio_event}]}`: words become the transcript's words, spacing
and audio events are dropped from the timing, and the text is the upstream's."""

from __future__ import annotations

from typing import Any

from voxrouter.providers.elevenlabs import _parse_error
from voxrouter.providers.stt_http import RemoteTranscriber, UpstreamRequest, content_type, upload_name, words_transcript
from voxrouter.providers.transcription import Transcript, TranscriberFeatures, TranscriptionRequest, Word

MODELS = {"scribe_v2": TranscriberFeatures(word_timestamps=True, segment_timestamps=True, prompt=False)}
RETIRED = {"scribe_v1": "scribe_v1 is retired by ElevenLabs; use elevenlabs/scribe_v2"}


def build_request(request: TranscriptionRequest, api_key: str) -> UpstreamRequest:
    """The upstream call for `request`: pure, no I/O. Word timing is always asked for: the gateway
    builds srt, vtt and verbose_json segments from it."""
    fields: list[tuple[str, str]] = [("model_id", request.model), ("timestamps_granularity", "word")]
    if request.language:
        fields.append(("language_code", request.language))
    if request.temperature:
        fields.append(("temperature", repr(float(request.temperature))))
    return UpstreamRequest(
        path="/v1/speech-to-text",
        headers={"xi-api-key": api_key},
        fields=fields,
        filename=upload_name(request.filename),
        audio=request.audio,
        content_type=content_type(request.filename),
    )


def parse_response(payload: Any, request: TranscriptionRequest) -> Transcript:
    words = [
        Word(str(w["text"]).strip(), float(w["start"]), float(w["end"]), 1.0)
        for w in payload.get("words") or []
        if w.get("type", "word") == "word" and w.get("start") is not None and w.get("end") is not None
    ]
    language = str(payload.get("language_code") or request.language or "")
    duration = max([w.end for w in words], default=0.0)
    transcript = words_transcript(str(payload["text"]), language, duration, words)
    probability = payload.get("language_probability")
    if isinstance(probability, (int, float)):
        return Transcript(transcript.text, transcript.language, float(probability), transcript.duration, transcript.segments, transcript.words)
    return transcript


class ElevenLabsTranscriber(RemoteTranscriber):
    known = MODELS
    retired = RETIRED
    parse_error = staticmethod(_parse_error)

    def build(self, request: TranscriptionRequest, api_key: str) -> UpstreamRequest:
        return build_request(request, api_key)

    def parse(self, payload: Any, request: TranscriptionRequest) -> Transcript:
        return parse_response(payload, request)
