"""Word timestamps for speech (`stream_format: "sse"`, `timestamps: "word"`) through a live gateway
on the local engines: tts-1 (Piper) and tts-1-hd (Kokoro), aligned by the local Whisper engine.
Every input word appears once, in order, monotonic, within the audio; the starts agree with
Whisper's own timing of the same audio; and, independently of Whisper, the words sit on the
speech: spread over the audio, louder inside the words than in the pauses between them."""

from __future__ import annotations

import base64
import difflib
import json
import statistics
from typing import Any

import httpx
import numpy as np
import pytest

from tests.audio_checks import decoded_duration_s
from tests.conftest import Gateway
from voxrouter.router.speech.timestamps import pcm_to_whisper
from voxrouter.router.speech.wordmatch import input_words, normalise

TEXT = "The library opens at 9 in the morning. It closes early on Sunday afternoon, doesn't it?"
RATE = 24_000


@pytest.fixture(scope="module")
def key(gateway: Gateway, database_engine: str) -> str:
    if database_engine != "sqlite":
        pytest.skip("what is heard does not depend on the database: listened to once, on SQLite")
    if gateway.internals.aligner is None:
        pytest.skip("the local Whisper engine is not installed")
    return gateway.new_key(5.0)


def speak(gateway: Gateway, key: str, **body: Any) -> tuple[list[dict[str, Any]], bytes]:
    events: list[dict[str, Any]] = []
    with httpx.stream(
        "POST", gateway.url + "/v1/audio/speech", headers={"Authorization": f"Bearer {key}"}, json=body, timeout=300
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: "):]))
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    return events, audio


def frame_energy(pcm: bytes, frame_s: float = 0.02) -> np.ndarray:
    samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    size = int(RATE * frame_s)
    frames = samples[: samples.size // size * size].reshape(-1, size)
    return np.sqrt(np.mean(frames**2, axis=1))


@pytest.mark.slow  # real engines and Whisper
@pytest.mark.parametrize("model,voice", [("tts-1", "alloy"), ("tts-1-hd", "nova")])
def test_every_word_is_timed_on_the_speech(gateway: Gateway, key: str, model: str, voice: str) -> None:
    events, pcm = speak(
        gateway, key, model=model, voice=voice, input=TEXT, response_format="pcm", stream_format="sse", timestamps="word"
    )
    types = [e["type"] for e in events]
    assert types[-1] == "speech.audio.done" and types.count("speech.audio.done") == 1
    assert "speech.audio.delta" in types
    stamped = [e for e in events if e["type"] == "speech.audio.timestamps"]
    assert stamped and types.index("speech.audio.timestamps") > types.index("speech.audio.delta")
    words = [w for e in stamped for w in e["words"]]
    duration = len(pcm) / 2 / RATE

    # Every input word once, in order, monotonic, within the audio.
    assert [w["word"] for w in words] == input_words(TEXT)
    floor = 0.0
    for word in words:
        assert floor <= word["start"] <= word["end"] <= duration + 0.05, words
        floor = word["end"]

    # Whisper's own timing of the same audio (heard again, outside the gateway's stream).
    transcript = gateway.internals.aligner.transcribe(pcm_to_whisper(pcm), word_timestamps=True)
    ours, theirs = [normalise(w["word"]) for w in words], [normalise(w.word) for w in transcript.words]
    matcher = difflib.SequenceMatcher(None, ours, theirs, autojunk=False)
    gaps = [
        abs(words[block.a + k]["start"] - transcript.words[block.b + k].start)
        for block in matcher.get_matching_blocks()
        for k in range(block.size)
    ]
    assert len(gaps) >= 0.7 * len(words), (ours, theirs)
    assert statistics.median(gaps) <= 0.150, gaps

    # Independently of Whisper: the words are spread over the audio, not stacked at 0 ...
    starts = [w["start"] for w in words]
    assert len(set(starts)) >= 0.9 * len(starts), starts
    assert starts[0] < 0.3 * duration and starts[-1] > 0.6 * duration, (starts, duration)
    # ... and sit on the speech: the frames inside words are louder than those between them.
    energy = frame_energy(pcm)
    inside = np.zeros(energy.size, bool)
    for word in words:
        inside[int(word["start"] / 0.02) : int(np.ceil(word["end"] / 0.02))] = True
    assert inside.mean() < 0.97, "the words cover the whole audio: no pauses found"
    assert float(np.median(energy[inside])) > 3 * float(np.median(energy[~inside])), (energy[inside].mean(), energy[~inside].mean())


@pytest.mark.slow
def test_timestamps_in_an_encoded_format(gateway: Gateway, key: str) -> None:
    events, _ = speak(
        gateway, key, model="tts-1", voice="alloy", input=TEXT, response_format="mp3", stream_format="sse", timestamps="word"
    )
    words = [w for e in events if e["type"] == "speech.audio.timestamps" for w in e["words"]]
    assert [w["word"] for w in words] == input_words(TEXT)
    assert len({w["start"] for w in words}) >= 0.9 * len(words)


def test_timestamps_need_sse(gateway: Gateway, key: str) -> None:
    response = httpx.post(
        gateway.url + "/v1/audio/speech",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "tts-1", "voice": "alloy", "input": TEXT, "timestamps": "word"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_body"
    assert "timestamps" in response.json()["details"]


def test_without_timestamps_there_are_no_timestamp_events(gateway: Gateway, key: str) -> None:
    events, _ = speak(gateway, key, model="tts-1", voice="alloy", input="Hello there.", response_format="pcm", stream_format="sse")
    assert "speech.audio.timestamps" not in [e["type"] for e in events]


@pytest.mark.parametrize("response_format", ["mp3", "pcm"])
def test_a_remote_provider_gets_timestamps_too(gateway: Gateway, key: str, response_format: str) -> None:
    """Whatever the emulator's audio says, every input word is listed once, in order, within it."""
    events, audio = speak(
        gateway, key, model="openai/tts-1", voice="alloy", input=TEXT, response_format=response_format,
        stream_format="sse", timestamps="word",
    )
    types = [e["type"] for e in events]
    assert types[-1] == "speech.audio.done" and "speech.audio.timestamps" in types
    words = [w for e in events if e["type"] == "speech.audio.timestamps" for w in e["words"]]
    assert [w["word"] for w in words] == input_words(TEXT)
    duration = decoded_duration_s(audio, response_format)
    floor = 0.0
    for word in words:
        assert floor <= word["start"] <= word["end"] <= duration + 0.05, (words, duration)
        floor = word["end"]
