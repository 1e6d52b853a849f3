"""The Hibari engine with its real model (the `heart` voice bundled in hibari-tts): it loads
without reaching for the network, speaks 24 kHz float32 that a real recogniser hears word for
word, plans bounded runs whose audio is exactly what `synthesize` gives, and is fast (its
real-time factor and first-piece latency are printed: run with -s to see them)."""

from __future__ import annotations

import asyncio
import socket
import time

import numpy as np
import pytest

from tests.listening import transcribe_pcm, word_error_rate
from voxrouter.local_engines.hibari import HibariEngine
from voxrouter.local_engines.runner import EngineRunner

pytestmark = pytest.mark.slow

SENTENCES = (
    "The weather today is sunny with a light breeze from the west.",
    "Please remember to bring your umbrella tomorrow morning.",
    "Could you tell me where the nearest library is?",
)
MAX_WER = 0.1
PARAGRAPH = (
    "The old lighthouse stood at the edge of the cliff, its white paint peeling in the salty wind. "
    "Every evening the keeper climbed the narrow stairs, lit the great lamp and watched the ships pass; "
    "some were fishing boats heading home, others were cargo vessels bound for distant ports. "
    "On the third of March, a storm rolled in from the north and the waves rose higher than anyone remembered."
)


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any download or internet socket fails loudly: the engine must need neither."""
    import hibari.tts
    import hibari.voices

    def refuse(*args, **kwargs):
        raise AssertionError("hibari reached for the network or its voice download")

    for module in (hibari.voices, hibari.tts):
        monkeypatch.setattr(module, "voice_path", refuse)
    monkeypatch.setattr(hibari.voices, "download", refuse)
    real_connect = socket.socket.connect

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            refuse()
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture(scope="module")
def engine():
    engine = HibariEngine(threads=1)
    assert engine.missing() is None
    with pytest.MonkeyPatch.context() as patch:
        _no_network(patch)
        started = time.perf_counter()
        engine.load()
        print(f"\nhibari: loaded in {time.perf_counter() - started:.2f}s")
    yield engine
    engine.close()


def _pcm(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def test_speaks_24k_float32_without_the_network(engine, monkeypatch):
    _no_network(monkeypatch)
    utterance = engine.utterance("heart", None, {})
    audio = engine.synthesize(SENTENCES[0], utterance)
    assert engine.sample_rate == 24_000
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert float(np.abs(audio).max()) <= 1.0
    duration = len(audio) / engine.sample_rate
    assert 2.0 <= duration <= 8.0, duration
    rms = float(np.sqrt(np.mean(audio**2)))
    assert rms > 0.02, rms
    frames = audio[: len(audio) // 480 * 480].reshape(-1, 480)  # 20 ms frames
    assert np.mean(np.sqrt(np.mean(frames**2, axis=1)) > 0.03) > 0.35, "mostly silent"


@pytest.mark.parametrize("text", SENTENCES)
def test_heard_word_for_word(engine, text):
    audio = engine.synthesize(text, engine.utterance("heart", None, {}))
    heard = transcribe_pcm(_pcm(audio))
    rate = word_error_rate(text, heard)
    print(f"\nhibari WER {rate:.3f}: {text!r} heard as {heard!r}")
    assert rate <= MAX_WER, (rate, heard)


def test_through_the_runner(engine):
    """The gateway's path: the runner cuts, plans, renders, joins and resamples to s16le."""
    text = " ".join(SENTENCES[:2])

    async def collect() -> tuple[bytes, float]:
        runner = EngineRunner(engine)
        runner.load()
        started, first, out = time.perf_counter(), None, b""
        try:
            async for chunk in runner.stream(text, engine.utterance("heart", None, {})):
                first = first or time.perf_counter() - started
                out += chunk
        finally:
            runner.pool.close()
        return out, first

    pcm, first = asyncio.run(collect())
    heard = transcribe_pcm(pcm)
    rate = word_error_rate(text, heard)
    print(f"\nhibari via runner: first audio after {first * 1e3:.0f} ms, WER {rate:.3f}: {heard!r}")
    assert rate <= MAX_WER, (rate, heard)


@pytest.mark.parametrize("text", [PARAGRAPH, " ".join(["the keeper watched the ships go by and waited"] * 12) + "."])
def test_plan_and_render_give_exactly_synthesize(engine, text):
    """Sentence by sentence, and one sentence too long for a run, cut between words."""
    utterance = engine.utterance("heart", None, {})
    runs = engine.plan(text, utterance)
    assert len(runs) >= 3 and all(0 < len(run) <= engine.max_phonemes for run in runs)
    joined = np.concatenate([engine.render(run, utterance) for run in runs])
    assert np.array_equal(joined, engine.synthesize(text, utterance))


def test_the_same_text_gives_the_same_audio(engine):
    utterance = engine.utterance("heart", None, {})
    assert np.array_equal(engine.synthesize(SENTENCES[1], utterance), engine.synthesize(SENTENCES[1], utterance))


def test_no_inference_grows_with_the_text(engine):
    """One 'sentence' with no punctuation at all, and digits that read as many phonemes."""
    utterance = engine.utterance("heart", None, {})
    text = " ".join(["and the keeper watched the ships go by"] * 60) + " 123456789012345678901234567890"
    runs = engine.plan(text, utterance)
    assert len(runs) >= 8 and all(0 < len(run) <= engine.max_phonemes for run in runs)
    longest = max(runs, key=len)
    started = time.perf_counter()
    audio = engine.render(longest, utterance)
    elapsed = time.perf_counter() - started
    print(f"\nhibari: longest run {len(longest)} phonemes, {len(audio) / 24_000:.1f}s of audio in {elapsed:.2f}s")
    assert elapsed < 5.0


def test_speed_changes_the_pace(engine):
    normal = engine.synthesize(SENTENCES[1], engine.utterance("heart", None, {}))
    fast = engine.synthesize(SENTENCES[1], engine.utterance("heart", 2.0, {}))
    slow = engine.synthesize(SENTENCES[1], engine.utterance("heart", 0.5, {}))
    assert len(fast) < 0.75 * len(normal) < 0.75 * 0.75 * len(slow), (len(fast), len(normal), len(slow))


def test_real_time_factor_and_first_piece_latency(engine):
    utterance = engine.utterance("heart", None, {})
    latencies = []
    for _ in range(5):
        started = time.perf_counter()
        hello = engine.synthesize("Hello there.", utterance)
        latencies.append(time.perf_counter() - started)
    started = time.perf_counter()
    audio = engine.synthesize(PARAGRAPH, utterance)
    elapsed = time.perf_counter() - started
    audio_s = len(audio) / engine.sample_rate
    rtf = elapsed / audio_s
    print(
        f"\nhibari: 'Hello there.' ({len(hello) / 24_000:.2f}s of audio) in {min(latencies) * 1e3:.1f} ms "
        f"(median {sorted(latencies)[2] * 1e3:.1f} ms); paragraph {audio_s:.1f}s of audio in {elapsed:.2f}s: "
        f"RTF {rtf:.4f} ({1 / rtf:.0f}x realtime, 1 thread)"
    )
    assert rtf < 0.5  # generous: a shared two-core machine
