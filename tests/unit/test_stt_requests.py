"""The remote speech-to-text adapters' pure parts: the upstream request each builds (path, headers,
multipart fields) and the transcript each reads from its vendor's answer; the upstream's errors as
`TranscriptionError` kinds on an in-memory transport (no sockets)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from voxrouter.providers import build_transcribers
from voxrouter.providers import cartesia_stt, elevenlabs_stt, openai_stt
from voxrouter.providers.cartesia_stt import CartesiaTranscriber
from voxrouter.providers.elevenlabs_stt import ElevenLabsTranscriber
from voxrouter.providers.openai_stt import OpenAITranscriber
from voxrouter.providers.stt_http import RemoteTranscriber
from voxrouter.providers.transcription import TranscriptionError, TranscriptionRequest
from voxrouter.router.config import load_config

AUDIO = b"RIFF....WAVEfmt "


def _job(model: str, **changes: Any) -> TranscriptionRequest:
    fields: dict[str, Any] = {"audio": AUDIO, "filename": "clip.wav", "model": model}
    return TranscriptionRequest(**{**fields, **changes})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- OpenAI --------------------------------------------------------------------------------


def test_openai_whisper_1_asks_for_verbose_json_with_segments_and_words() -> None:
    features = openai_stt.MODELS["whisper-1"]
    sent = openai_stt.build_request(_job("whisper-1", language="en", prompt="Names: Elinor", word_timestamps=True, request_id="req-1"), "sk-x", features)
    assert sent.path == "/audio/transcriptions"
    assert sent.headers == {"Authorization": "Bearer sk-x", "X-Client-Request-Id": "req-1"}
    assert sent.fields == [
        ("model", "whisper-1"), ("response_format", "verbose_json"), ("language", "en"), ("prompt", "Names: Elinor"),
        ("temperature", "0.0"), ("timestamp_granularities[]", "segment"), ("timestamp_granularities[]", "word"),
    ]  # fmt: skip
    assert (sent.filename, sent.content_type, sent.audio) == ("clip.wav", "audio/x-wav", AUDIO)


@pytest.mark.parametrize("model", ["gpt-4o-transcribe", "gpt-4o-mini-transcribe"])
def test_openai_gpt_4o_models_take_json_only_and_declare_no_timestamps(model: str) -> None:
    features = openai_stt.MODELS[model]
    assert features.response_formats == ("json", "text")
    assert not features.word_timestamps and not features.segment_timestamps
    sent = openai_stt.build_request(_job(model), "k", features)
    assert dict(sent.fields)["response_format"] == "json"
    assert "timestamp_granularities[]" not in dict(sent.fields)


def test_openai_translation_goes_to_its_own_path_without_a_language() -> None:
    sent = openai_stt.build_request(_job("whisper-1", task="translate", language="fr"), "k", openai_stt.MODELS["whisper-1"])
    assert sent.path == "/audio/translations"
    assert dict(sent.fields) == {"model": "whisper-1", "response_format": "verbose_json", "temperature": "0.0"}


def test_openai_verbose_json_becomes_a_transcript() -> None:
    payload = {
        "task": "transcribe", "language": "english", "duration": 2.5, "text": " Hello there. Bye.",
        "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": 1.2, "text": " Hello there."},
                     {"id": 1, "seek": 120, "start": 1.2, "end": 2.5, "text": " Bye."}],
        "words": [{"word": "Hello", "start": 0.1, "end": 0.5}, {"word": "there.", "start": 0.5, "end": 1.0},
                  {"word": "Bye.", "start": 1.4, "end": 2.0}],
    }  # fmt: skip
    transcript = openai_stt.parse_response(payload, _job("whisper-1", word_timestamps=True))
    assert (transcript.text, transcript.language, transcript.duration) == ("Hello there. Bye.", "en", 2.5)
    assert [(s.start, s.end, s.text) for s in transcript.segments] == [(0.0, 1.2, "Hello there."), (1.2, 2.5, "Bye.")]
    assert [w.word for w in transcript.segments[1].words or []] == ["Bye."]
    assert [w.word for w in transcript.words] == ["Hello", "there.", "Bye."]


def test_openai_json_becomes_one_untimed_segment() -> None:
    transcript = openai_stt.parse_response({"text": "Hi.", "usage": {"type": "duration", "seconds": 1}}, _job("gpt-4o-transcribe"))
    assert transcript.text == "Hi." and [s.text for s in transcript.segments] == ["Hi."] and transcript.words == []


# --- ElevenLabs ------------------------------------------------------------------------------


def test_elevenlabs_sends_model_id_word_timing_and_its_key_header() -> None:
    sent = elevenlabs_stt.build_request(_job("scribe_v2", language="en"), "xi-k")
    assert (sent.path, sent.headers) == ("/v1/speech-to-text", {"xi-api-key": "xi-k"})
    assert sent.fields == [("model_id", "scribe_v2"), ("timestamps_granularity", "word"), ("language_code", "en")]


def test_elevenlabs_words_keep_words_and_drop_spacing_and_audio_events() -> None:
    payload = {
        "language_code": "eng", "language_probability": 0.97, "text": "Hi there (laughs)",
        "words": [{"text": "Hi", "start": 0.1, "end": 0.3, "type": "word"}, {"text": " ", "start": 0.3, "end": 0.35, "type": "spacing"},
                  {"text": "there", "start": 0.35, "end": 0.8, "type": "word"},
                  {"text": "(laughs)", "start": 0.9, "end": 1.4, "type": "audio_event"}],
    }  # fmt: skip
    transcript = elevenlabs_stt.parse_response(payload, _job("scribe_v2"))
    assert [(w.word, w.start, w.end) for w in transcript.words] == [("Hi", 0.1, 0.3), ("there", 0.35, 0.8)]
    assert (transcript.language, transcript.language_probability, transcript.text) == ("eng", 0.97, "Hi there (laughs)")
    assert [(s.start, s.end) for s in transcript.segments] == [(0.1, 0.8)]


def test_elevenlabs_refuses_the_retired_scribe_v1_before_any_upload() -> None:
    transcriber = ElevenLabsTranscriber("elevenlabs", _spec("elevenlabs"))
    assert "scribe_v1" in transcriber.models()
    with pytest.raises(TranscriptionError) as info:
        transcriber.check(_job("scribe_v1"))
    assert info.value.kind == "invalid_option" and "retired" in info.value.message and "scribe_v2" in info.value.message


# --- Cartesia --------------------------------------------------------------------------------


def test_cartesia_sends_bearer_and_the_current_sdk_version() -> None:
    sent = cartesia_stt.build_request(_job("ink-whisper", language="en"), "ck")
    assert sent.path == "/stt"
    assert sent.headers == {"Authorization": "Bearer ck", "cartesia-version": "2026-08-14"}
    assert sent.fields == [("model", "ink-whisper"), ("timestamp_granularities[]", "word"), ("language", "en")]


def test_cartesia_transcript_with_words() -> None:
    payload = {"type": "transcript", "text": "Hi there", "language": "en", "duration": 1.5,
               "words": [{"word": "Hi", "start": 0.0, "end": 0.4}, {"word": "there", "start": 0.5, "end": 0.9}]}  # fmt: skip
    transcript = cartesia_stt.parse_response(payload, _job("ink-whisper"))
    assert (transcript.text, transcript.language, transcript.duration) == ("Hi there", "en", 1.5)
    assert [w.word for w in transcript.words] == ["Hi", "there"] and transcript.segments[0].end == 1.5


# --- errors, on an in-memory transport ---------------------------------------------------------


def _spec(pid: str) -> Any:
    spec = load_config().providers[pid]
    return spec.model_copy(update={"base_url": "http://upstream.test", "base_url_env": None, "api_key": "k", "api_key_env": None})


ERRORS = {
    "openai": lambda status: {"error": {"message": f"boom {status}", "type": "server_error", "param": None, "code": None}},
    "elevenlabs": lambda status: {"detail": [{"loc": ["body", "file"], "msg": "bad file", "type": "value_error"}]}
    if status == 422 else {"detail": {"status": "x", "message": f"boom {status}"}},
    "cartesia": lambda status: {"error_code": "x", "title": "Error", "message": f"boom {status}", "request_id": "r"},
}
ADAPTERS: dict[str, tuple[type[RemoteTranscriber], str]] = {
    "openai": (OpenAITranscriber, "whisper-1"), "elevenlabs": (ElevenLabsTranscriber, "scribe_v2"), "cartesia": (CartesiaTranscriber, "ink-whisper"),
}  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize("pid", sorted(ADAPTERS))
@pytest.mark.parametrize(
    ("status", "kind"), [(401, "auth"), (422, "invalid_option"), (429, "rate_limited"), (500, "upstream"), (503, "upstream"), (504, "timeout")]
)
async def test_upstream_errors_become_kinds(pid: str, status: int, kind: str) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=ERRORS[pid](status), headers={"retry-after": "7"} if status == 429 else {})

    cls, model = ADAPTERS[pid]
    transcriber = cls(pid, _spec(pid), transport=httpx.MockTransport(answer))
    with pytest.raises(TranscriptionError) as info:
        await transcriber.transcribe(_job(model))
    await transcriber.aclose()
    assert info.value.kind == kind
    if status == 401:
        assert "credentials" in info.value.message and "boom" not in info.value.message  # never echo what it says of our key
    if status == 429:
        assert info.value.retry_after == 7


@pytest.mark.anyio
async def test_a_multipart_body_goes_out_with_repeated_list_fields() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"type": "transcript", "text": "ok", "words": []})

    transcriber = CartesiaTranscriber("cartesia", _spec("cartesia"), transport=httpx.MockTransport(answer))
    transcript = await transcriber.transcribe(_job("ink-whisper"))
    await transcriber.aclose()
    assert transcript.text == "ok"
    [request] = seen
    body = request.content
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert b'name="timestamp_granularities[]"\r\n\r\nword' in body and b'filename="clip.wav"' in body and AUDIO in body


@pytest.mark.anyio
async def test_an_unreadable_answer_is_an_upstream_failure() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=json.dumps({"words": []}).encode()))
    transcriber = OpenAITranscriber("openai", _spec("openai"), transport=transport)
    with pytest.raises(TranscriptionError) as info:
        await transcriber.transcribe(_job("whisper-1"))
    await transcriber.aclose()
    assert info.value.kind == "upstream"


def test_build_transcribers_picks_each_providers_adapter_and_a_key_less_one_is_unavailable() -> None:
    config = load_config()
    providers = {pid: spec.model_copy(update={"api_key_env": None, "api_key": None}) for pid, spec in config.providers.items()}
    built = build_transcribers(config.transcription.local, providers, {"local", "openai", "elevenlabs", "cartesia", "nope"})
    assert {pid: type(t).__name__ for pid, t in built.items()} == {
        "cartesia": "CartesiaTranscriber", "elevenlabs": "ElevenLabsTranscriber", "local": "LocalTranscriber", "openai": "OpenAITranscriber",
    }  # fmt: skip
    assert built["openai"].unavailable_reason("whisper-1") == "missing_api_key"
    assert built["openai"].unavailable_reason("tts-1") == "unknown_model"
    built["local"].engine.close()  # type: ignore[attr-defined]
