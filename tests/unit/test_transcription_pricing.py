"""What a transcription costs and who serves it: the model resolved from an alias or
`provider/model` (router/transcription/models.py), integer micro-dollars per audio minute, and
the duration measured by decoding the upload (router/transcription/duration.py)."""

from __future__ import annotations

import io
import math
import struct
import wave

import av
import pytest

from voxrouter.providers.transcription import Transcript, TranscriberFeatures, TranscriptionRequest
from voxrouter.router.config import TranscriptionSpec, load_config
from voxrouter.router.http.errors import ApiError
from voxrouter.router.transcription import duration
from voxrouter.router.transcription.models import SttTarget, resolve


class FakeTranscriber:
    id = "local"

    def __init__(self, missing: tuple[str, ...] = ()) -> None:
        self.missing = missing

    def models(self) -> tuple[str, ...]:
        return ("whisper-tiny.en", "whisper-base")

    def features(self, model: str) -> TranscriberFeatures:
        return TranscriberFeatures(word_timestamps=True)

    def unavailable_reason(self, model: str) -> str | None:
        return "model_not_installed" if model in self.missing else None

    def check(self, request: TranscriptionRequest) -> None:
        return None

    async def transcribe(self, request: TranscriptionRequest) -> Transcript:
        raise NotImplementedError

    def close(self) -> None:
        return None


def _spec(price: int = 600_000) -> TranscriptionSpec:
    return TranscriptionSpec.model_validate(
        {"models": {"local/whisper-tiny.en": {"price_micros_per_minute": price}, "local/whisper-base": {}},
         "aliases": {"whisper-1": "local/whisper-tiny.en"}}
    )  # fmt: skip


@pytest.mark.parametrize(
    ("audio_ms", "price", "micros"),
    [(0, 600_000, 0), (1, 600_000, 10), (60_000, 6_000, 6_000), (1, 1, 1), (59_999, 1, 1), (60_001, 1, 2),
     (90_500, 3_000, 4_525), (1_800_000, 10_000, 300_000), (12_345, 0, 0)],
)  # fmt: skip
def test_price_per_audio_minute_in_integers_rounded_up(audio_ms: int, price: int, micros: int) -> None:
    target = SttTarget(FakeTranscriber(), "whisper-tiny.en", price)
    assert target.cost_micros(audio_ms) == micros
    assert isinstance(target.cost_micros(audio_ms), int)


def test_the_alias_and_the_full_name_resolve_alike() -> None:
    for name in ("whisper-1", "local/whisper-tiny.en"):
        target = resolve(_spec(), {"local": FakeTranscriber()}, name)
        assert (target.label, target.price_micros_per_minute, target.provider_id) == ("local/whisper-tiny.en", 600_000, "local")


@pytest.mark.parametrize(
    ("model", "details"),
    [("gpt-4o-transcribe", "provider/model_id"), ("openai/whisper-1", "unknown_provider: openai"),
     ("local/whisper-huge", "unknown_model: local/whisper-huge"), ("local/", "provider/model_id")],
)  # fmt: skip
def test_unknown_models_are_invalid_model(model: str, details: str) -> None:
    with pytest.raises(ApiError) as caught:
        resolve(_spec(), {"local": FakeTranscriber()}, model)
    assert (caught.value.status, caught.value.code) == (400, "invalid_model") and details in caught.value.details


def test_a_model_not_listed_in_config_is_not_served() -> None:
    spec = TranscriptionSpec.model_validate({"models": {"local/whisper-tiny.en": {}}, "aliases": {}})
    with pytest.raises(ApiError) as caught:
        resolve(spec, {"local": FakeTranscriber()}, "local/whisper-base")
    assert caught.value.code == "invalid_model"


def test_an_uninstalled_model_is_unavailable() -> None:
    with pytest.raises(ApiError) as caught:
        resolve(_spec(), {"local": FakeTranscriber(missing=("whisper-base",))}, "local/whisper-base")
    assert (caught.value.status, caught.value.code) == (503, "provider_unavailable")
    assert "model_not_installed" in caught.value.details and caught.value.headers["Retry-After"]


def test_the_shipped_config_maps_whisper_1_to_the_free_local_engine() -> None:
    spec = load_config().transcription
    assert spec.aliases["whisper-1"] == "local/whisper-tiny.en"
    assert spec.models["local/whisper-tiny.en"].price_micros_per_minute == 0
    assert spec.max_file_bytes == 25 * 1024 * 1024
    assert TranscriptionSpec() == spec  # a config without the section behaves as the shipped one


def test_config_refuses_an_alias_to_an_unlisted_model() -> None:
    with pytest.raises(ValueError, match="transcription.models does not list"):
        TranscriptionSpec.model_validate({"models": {"local/whisper-tiny.en": {}}, "aliases": {"whisper-1": "local/nope"}})
    with pytest.raises(ValueError, match="provider/model_id"):
        TranscriptionSpec.model_validate({"models": {"whisper": {}}, "aliases": {}})
    with pytest.raises(ValueError):
        TranscriptionSpec.model_validate({"models": {"local/whisper-tiny.en": {"price_micros_per_minute": -1}}, "aliases": {}})


# --- duration ----------------------------------------------------------------------------


def _wav(seconds: float, rate: int = 16_000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        frames = round(seconds * rate)
        wav.writeframes(b"".join(struct.pack("<h", int(3000 * math.sin(i / 20))) for i in range(frames)))
    return out.getvalue()


def _encoded(seconds: float, codec: str, container: str) -> bytes:
    out = io.BytesIO()
    with av.open(io.BytesIO(_wav(seconds, 24_000))) as source, av.open(out, "w", format=container) as sink:
        stream = sink.add_stream(codec, rate=24_000)
        for frame in source.decode(audio=0):
            frame.pts = None
            for packet in stream.encode(frame):
                sink.mux(packet)
        for packet in stream.encode(None):
            sink.mux(packet)
    return out.getvalue()


@pytest.mark.parametrize(("seconds", "rate"), [(1.0, 16_000), (2.5, 44_100), (0.001, 8_000), (3.0, 24_000)])
def test_a_wav_is_measured_to_the_millisecond(seconds: float, rate: int) -> None:
    assert duration.measure_ms(_wav(seconds, rate), 60) == math.ceil(round(seconds * rate) * 1000 / rate)


@pytest.mark.parametrize(("codec", "container"), [("flac", "flac"), ("libopus", "ogg"), ("mp3", "mp3")])
def test_compressed_audio_is_measured_by_decoding_it(codec: str, container: str) -> None:
    measured = duration.measure_ms(_encoded(2.0, codec, container), 60)
    assert abs(measured - 2000) <= 60, measured  # encoders pad a frame or so


@pytest.mark.parametrize("data", [b"", b"not audio at all" * 64, _wav(0.0)])
def test_what_is_not_audio_is_invalid_audio(data: bytes) -> None:
    with pytest.raises(duration.InvalidAudio):
        duration.measure_ms(data, 60)


def test_audio_past_the_cap_stops_decoding() -> None:
    with pytest.raises(duration.AudioTooLong):
        duration.measure_ms(_wav(3.0), 2.0)
