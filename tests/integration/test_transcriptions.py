"""`POST /v1/audio/transcriptions` through a live gateway, called with the unmodified OpenAI SDK:
real human speech (LibriVox readings of "Sense and Sensibility" in Debian's pocketsphinx-testdata)
and the gateway's own tts-1 speech, heard by the local Whisper engine (`whisper-1` on a fresh
install) in every response format and streamed; srt and vtt read back by real subtitle parsers;
the documented errors; and the money path (reserve on the measured duration, settle on it)."""

from __future__ import annotations

import dataclasses
import io
import re
import sqlite3
import threading
import time
import uuid
import wave
from pathlib import Path
from typing import Any, Iterator

import av
import httpx
import pytest
import srt
import webvtt
from openai import APIStatusError, OpenAI

from tests.conftest import Gateway, emulated_config, running_gateway
from tests.integration.test_openapi import _check
from tests.listening import word_error_rate
from voxrouter.router.transcription.duration import measure_ms

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
CLIP = "sense_and_sensibility_01_austen_64kb-0870"  # the longest of the five (about 8 s)
MAX_WER = 0.10
FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
SPOKEN = "The library opens at nine in the morning and closes early on Sunday afternoon."


@dataclasses.dataclass(frozen=True)
class Clip:
    path: Path
    reference: str
    duration_s: float


@pytest.fixture(scope="module")
def clip() -> Clip:
    transcripts = LIBRIVOX / "transcription"
    if not transcripts.is_file() or not (LIBRIVOX / f"{CLIP}.wav").is_file():
        pytest.skip(f"no human speech here: {LIBRIVOX} is absent (apt-get install pocketsphinx-testdata)")
    for line in transcripts.read_text().splitlines():
        match = re.match(r"<s> (.*) </s> \((.+)\)", line.strip())
        if match and match.group(2) == CLIP:
            path = LIBRIVOX / f"{CLIP}.wav"
            return Clip(path, match.group(1), measure_ms(path.read_bytes(), 3600) / 1000)
    pytest.skip(f"{transcripts} does not name {CLIP}")


@pytest.fixture(scope="module")
def client(gateway: Gateway, database_engine: str) -> OpenAI:
    if database_engine != "sqlite":
        pytest.skip("what is heard does not depend on the database: listened to once, on SQLite")
    return OpenAI(base_url=gateway.url + "/v1", api_key=gateway.new_key(5.0), max_retries=0, timeout=300)


def _times_are_sane(spans: list[tuple[float, float]], duration_s: float) -> None:
    assert spans, "no timed spans"
    for (start, end), (next_start, _) in zip(spans, spans[1:] + [(duration_s, duration_s)]):
        assert 0 <= start <= end <= duration_s + 0.05, (start, end, duration_s)
        assert start <= next_start + 1e-6, spans  # monotonic


@pytest.mark.slow  # listening: Whisper on real speech
@pytest.mark.parametrize("response_format", FORMATS)
def test_a_human_clip_is_heard_in_every_format(client: OpenAI, clip: Clip, response_format: str) -> None:
    with clip.path.open("rb") as audio:
        if response_format == "verbose_json":
            result: Any = client.audio.transcriptions.create(
                file=audio, model="whisper-1", response_format="verbose_json", timestamp_granularities=["word", "segment"]
            )
        else:
            result = client.audio.transcriptions.create(file=audio, model="whisper-1", response_format=response_format)  # type: ignore[call-overload]
    if response_format == "json":
        text = result.text
        assert result.usage.type == "duration" and abs(result.usage.seconds - clip.duration_s) < 0.01
    elif response_format == "text":
        text = result
    elif response_format == "srt":
        cues = list(srt.parse(result))
        assert [cue.index for cue in cues] == list(range(1, len(cues) + 1))
        _times_are_sane([(c.start.total_seconds(), c.end.total_seconds()) for c in cues], clip.duration_s)
        text = " ".join(cue.content for cue in cues)
    elif response_format == "vtt":
        assert result.startswith("WEBVTT")
        cues = list(webvtt.from_string(result))
        _times_are_sane([(_vtt_s(c.start), _vtt_s(c.end)) for c in cues], clip.duration_s)
        text = " ".join(cue.text for cue in cues)
    else:
        assert result.language == "en" and abs(result.duration - clip.duration_s) < 0.01
        _times_are_sane([(w.start, w.end) for w in result.words], clip.duration_s)
        _times_are_sane([(s.start, s.end) for s in result.segments], clip.duration_s)
        assert word_error_rate(clip.reference, " ".join(w.word for w in result.words)) <= MAX_WER
        text = result.text
    wer = word_error_rate(clip.reference, text)
    print(f"{response_format}: WER {wer:.3f}: {text!r}")
    assert wer <= MAX_WER, (clip.reference, text)


def _vtt_s(stamp: str) -> float:
    hours, minutes, seconds = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@pytest.mark.slow  # listening: Whisper on real speech
def test_every_reading_is_heard(client: OpenAI, clip: Clip) -> None:
    """All five readings (one reader, about 25 s), as mp3 too: the gateway decodes what it is sent."""
    references = {}
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        if match := re.match(r"<s> (.*) </s> \((.+)\)", line.strip()):
            references[match.group(2)] = match.group(1)
    heard = {}
    for name, reference in sorted(references.items()):
        path = LIBRIVOX / f"{name}.wav"
        if path.is_file():
            heard[name] = client.audio.transcriptions.create(file=(f"{name}.mp3", _mp3(path.read_bytes())), model="whisper-1").text
    assert len(heard) >= 3, heard
    wer = word_error_rate(" ".join(references[n] for n in heard), " ".join(heard.values()))
    print(f"{len(heard)} readings as mp3: WER {wer:.3f}")
    assert wer <= MAX_WER, heard


def _mp3(wav: bytes) -> bytes:
    out = io.BytesIO()
    with av.open(io.BytesIO(wav)) as source, av.open(out, "w", format="mp3") as sink:
        stream = sink.add_stream("mp3", rate=16_000)
        for frame in source.decode(audio=0):
            frame.pts = None
            for packet in stream.encode(frame):
                sink.mux(packet)
        for packet in stream.encode(None):
            sink.mux(packet)
    return out.getvalue()


@pytest.mark.slow  # listening: Whisper on real speech
def test_a_human_clip_streams_as_text_deltas(client: OpenAI, clip: Clip) -> None:
    with clip.path.open("rb") as audio:
        events = list(client.audio.transcriptions.create(file=audio, model="whisper-1", stream=True))
    assert [e.type for e in events] == ["transcript.text.delta"] * (len(events) - 1) + ["transcript.text.done"]
    assert len(events) >= 2
    done = events[-1]
    assert "".join(e.delta for e in events[:-1]) == done.text
    wer = word_error_rate(clip.reference, done.text)
    print(f"stream: WER {wer:.3f}: {done.text!r}")
    assert wer <= MAX_WER, (clip.reference, done.text)


@pytest.mark.slow  # listening: Whisper on real speech
def test_the_gateways_own_speech_is_heard(client: OpenAI) -> None:
    wav = client.audio.speech.create(model="tts-1", voice="alloy", input=SPOKEN, response_format="wav").read()
    result = client.audio.transcriptions.create(file=("speech.wav", wav), model="local/whisper-tiny.en", response_format="verbose_json")
    wer = word_error_rate(SPOKEN, result.text)
    print(f"tts-1 alloy: WER {wer:.3f}: {result.text!r}")
    assert wer <= MAX_WER, result.text
    assert result.segments and result.words is None  # segment is the default granularity


# --- errors and money (every database) -----------------------------------------------------


def _error(call: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(APIStatusError) as caught:
        call()
    return caught.value.status_code, caught.value.response.json()


def _usage(gateway: Gateway, key: str) -> list[dict[str, Any]]:
    response = httpx.get(gateway.url + "/v1/usage", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()["recent"]


def test_a_file_that_is_not_audio_is_invalid_audio_and_free(gateway: Gateway) -> None:
    key = gateway.new_key(5.0)
    client = OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    status, body = _error(lambda: client.audio.transcriptions.create(file=("notes.wav", b"RIFF this is not audio" * 50), model="whisper-1"))
    assert (status, body["error"]) == (400, "invalid_audio"), body
    assert set(body) == {"error", "details"}
    [row] = _usage(gateway, key)
    assert (row["status"], row["code"], row["costMicros"], row["kind"]) == (400, "invalid_audio", 0, "transcription")
    credits = httpx.get(gateway.url + "/v1/credits", headers={"Authorization": f"Bearer {key}"}).json()
    assert credits == {"balanceMicros": 5_000_000, "reservedMicros": 0}


def test_an_unknown_model_is_invalid_model(gateway: Gateway) -> None:
    client = OpenAI(base_url=gateway.url + "/v1", api_key=gateway.new_key(5.0), max_retries=0)
    for model in ("local/whisper-huge", "nobody/whisper", "gpt-nonexistent-transcribe"):
        status, body = _error(lambda: client.audio.transcriptions.create(file=("a.wav", b"\0" * 100), model=model))
        assert (status, body["error"]) == (400, "invalid_model"), (model, body)
    # tiny.en hears English only: refused before the file is even decoded.
    status, body = _error(lambda: client.audio.transcriptions.create(file=("a.wav", b"\0" * 100), model="whisper-1", language="fr"))
    assert (status, body["error"]) == (400, "invalid_body") and "English only" in body["details"], body


@pytest.fixture
def priced_gateway(emulators: Any, tmp_path: Path) -> Iterator[Gateway]:
    """A gateway of its own: a 300 KB upload cap and the local engine at 600,000 micro-dollars a minute."""
    config = emulated_config(emulators)
    transcription = config.transcription.model_copy(
        update={
            "max_file_bytes": 300_000,
            "models": {"local/whisper-tiny.en": config.transcription.models["local/whisper-tiny.en"].model_copy(update={"price_micros_per_minute": 600_000})},
        }
    )
    with running_gateway(tmp_path, config.model_copy(update={"transcription": transcription})) as running:
        yield running


def test_a_file_over_the_cap_is_413(priced_gateway: Gateway) -> None:
    client = OpenAI(base_url=priced_gateway.url + "/v1", api_key=priced_gateway.new_key(5.0), max_retries=0)
    status, body = _error(lambda: client.audio.transcriptions.create(file=("big.wav", b"\0" * 400_000), model="whisper-1"))
    assert (status, body["error"]) == (413, "invalid_body"), body


def test_the_measured_duration_is_reserved_and_charged(priced_gateway: Gateway, clip: Clip) -> None:
    key = priced_gateway.new_key(5.0, org=f"org-{uuid.uuid4().hex[:10]}")
    client = OpenAI(base_url=priced_gateway.url + "/v1", api_key=key, max_retries=0, timeout=300)
    response = client.audio.transcriptions.with_raw_response.create(file=clip.path.open("rb"), model="whisper-1")
    assert response.headers["x-voxrouter-model"] == "local/whisper-tiny.en"
    result = response.parse()
    duration_ms = round(result.usage.seconds * 1000)
    expected = -(-duration_ms * 600_000 // 60_000)  # integer micro-dollars, rounded up
    [row] = _usage(priced_gateway, key)
    assert (row["status"], row["kind"], row["costMicros"]) == (200, "transcription", expected), row
    database = priced_gateway.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as db:  # the row keeps the duration it was priced on
        assert db.execute("SELECT kind, audio_ms, cost_micros FROM usage_records WHERE request_id = ?",
                          (response.headers["x-request-id"],)).fetchall() == [("transcription", duration_ms, expected)]  # fmt: skip
    credits = httpx.get(priced_gateway.url + "/v1/credits", headers={"Authorization": f"Bearer {key}"}).json()
    assert credits == {"balanceMicros": 5_000_000 - expected, "reservedMicros": 0}
    activity = httpx.get(priced_gateway.url + "/v1/credits/activity", headers={"Authorization": f"Bearer {key}"}).json()
    assert [a["kind"] for a in activity][:2] == ["commit", "reserve"], activity
    assert {a["source"] for a in activity[:2]} == {"transcription"}, activity


def test_answers_match_the_spec(gateway: Gateway, client: OpenAI) -> None:
    short = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0880.wav"  # "he was not an ill disposed young man"
    if not short.is_file():
        pytest.skip(f"{short} is absent")
    headers = {"Authorization": f"Bearer {client.api_key}"}
    url = gateway.url + "/v1/audio/transcriptions"
    for fields in ({"response_format": "json"}, {"response_format": "verbose_json", "timestamp_granularities[]": "word"},
                   {"response_format": "srt"}, {"stream": "true"}):  # fmt: skip
        response = httpx.post(url, headers=headers, data={"model": "whisper-1", **fields}, files={"file": ("a.wav", short.read_bytes())}, timeout=120)
        assert response.status_code == 200, response.text
        assert response.headers["x-voxrouter-provider"] == "local" and response.headers["x-request-id"]
        assert response.headers["x-ratelimit-limit"]
        _check(response, "/v1/audio/transcriptions", "post")
    unauthorised = httpx.post(url, data={"model": "whisper-1"}, files={"file": ("a.wav", b"x")})
    assert unauthorised.status_code == 401 and unauthorised.json()["error"] == "unauthorized"
    _check(unauthorised, "/v1/audio/transcriptions", "post")
    metrics = httpx.get(gateway.url + "/metrics").text
    assert 'voxrouter_transcriptions_total{code="",model="local/whisper-tiny.en",provider="local",status="200"}' in metrics
    not_multipart = httpx.post(url, headers=headers, json={"model": "whisper-1"})
    assert (not_multipart.status_code, not_multipart.json()["error"]) == (400, "invalid_body")


@pytest.mark.slow  # listening: Whisper on real speech
def test_the_event_loop_answers_while_whisper_works(gateway: Gateway, client: OpenAI, clip: Clip) -> None:
    """Inference runs on the engine's worker threads: /healthz answers at once during a
    transcription of the five readings back to back (about 25 s of speech)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as joined:
        joined.setnchannels(1)
        joined.setsampwidth(2)
        joined.setframerate(16_000)
        for path in sorted(LIBRIVOX.glob("*.wav")):
            with wave.open(str(path)) as part:
                if (part.getnchannels(), part.getsampwidth(), part.getframerate()) == (1, 2, 16_000):
                    joined.writeframes(part.readframes(part.getnframes()))
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(text=client.audio.transcriptions.create(file=("all.wav", out.getvalue()), model="whisper-1").text))
    worker.start()
    latencies = []
    with httpx.Client(base_url=gateway.url) as probe:
        while worker.is_alive():
            started = time.monotonic()
            assert probe.get("/healthz").status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)
    worker.join()
    assert "dashwood" in result["text"].lower()
    print(f"/healthz during a transcription: {len(latencies)} probes, slowest {max(latencies) * 1000:.0f} ms")
    assert len(latencies) >= 3 and max(latencies) < 0.5, latencies
