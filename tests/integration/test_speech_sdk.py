"""The official OpenAI SDK, unchanged, against a live gateway in front of the emulators."""

from __future__ import annotations

import base64
import json
import time

import pytest
from openai import OpenAI

from tests.audio_checks import decoded_duration_s

FORMATS = ["mp3", "opus", "aac", "flac", "wav", "pcm"]
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/l16",
}


def _client(gateway, key: str) -> OpenAI:
    return OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("model", ["openai/tts-1", "elevenlabs/eleven_turbo_v2_5", "cartesia/sonic-2"])
def test_every_format_from_every_provider(gateway, emulators, api_key, model, fmt):
    provider = model.split("/")[0]
    emulators[provider].state.behaviour.audio_duration_s = 1.0
    voice = {"openai": "alloy", "elevenlabs": "21m00Tcm4TlvDq8ikWAM", "cartesia": "a0e99841-438c-4a64-b679-ae501e7d6091"}[provider]
    raw = _client(gateway, api_key).audio.speech.with_raw_response.create(
        model=model, voice=voice, input="Hello from the gateway.", response_format=fmt
    )
    assert raw.headers["x-voxrouter-provider"] == provider
    assert raw.headers["content-type"].startswith(CONTENT_TYPES[fmt])
    assert raw.headers["x-request-id"]
    duration = decoded_duration_s(raw.content, fmt)
    assert 0.95 <= duration <= 1.15, duration


def test_streaming_yields_first_bytes_before_upstream_finishes(gateway, emulators, api_key):
    emulators["openai"].state.behaviour.first_byte_delay_s = 0.05
    emulators["openai"].state.behaviour.stream_time_s = 1.5
    emulators["openai"].state.behaviour.chunks = 15
    started = time.perf_counter()
    first_at = None
    total = b""
    with _client(gateway, api_key).audio.speech.with_streaming_response.create(
        model="openai/tts-1", voice="alloy", input="Streaming test.", response_format="pcm"
    ) as response:
        for chunk in response.iter_bytes():
            if first_at is None and chunk:
                first_at = time.perf_counter() - started
            total += chunk
    elapsed = time.perf_counter() - started
    assert first_at is not None and first_at < 0.6, first_at
    assert elapsed >= 1.4
    assert len(total) == 48_000  # 1 s of 24 kHz s16le


def test_sse_stream_format(gateway, api_key):
    raw = _client(gateway, api_key).audio.speech.with_raw_response.create(
        model="openai/gpt-4o-mini-tts", voice="nova", input="Events please.", response_format="pcm", stream_format="sse"
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in raw.content.decode().splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done"
    assert set(events[-1]["usage"]) == {"input_tokens", "output_tokens", "total_tokens"}
    deltas = [e for e in events[:-1]]
    assert deltas and all(e["type"] == "speech.audio.delta" for e in deltas)
    audio = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert len(audio) == 48_000


def test_alias_and_voice_map(gateway, emulators, api_key):
    _client(gateway, api_key).audio.speech.create(model="eleven-turbo", voice="nova", input="Alias.")
    recorded = [r for r in emulators["elevenlabs"].state.requests if r.method == "POST"][-1]
    assert recorded.path.endswith("/EXAVITQu4vr4xnSDxMaL/stream")
    assert recorded.body["model_id"] == "eleven_turbo_v2_5"


def test_request_passes_through_to_openai(gateway, emulators, api_key):
    _client(gateway, api_key).audio.speech.create(
        model="openai/gpt-4o-mini-tts",
        voice="coral",
        input="Pass me through.",
        instructions="Speak warmly.",
        speed=1.25,
        response_format="flac",
        extra_body={"provider_options": {"user": "abc"}},
    )
    recorded = emulators["openai"].state.requests[-1]
    assert recorded.headers["authorization"] == f"Bearer {emulators['openai'].state.api_key}"
    assert recorded.body == {
        "model": "gpt-4o-mini-tts",
        "input": "Pass me through.",
        "voice": "coral",
        "response_format": "flac",
        "speed": 1.25,
        "instructions": "Speak warmly.",
        "user": "abc",
    }
