"""An engine at work: text in, a stream of 24 kHz s16le PCM out, piece by piece.

The text is split so the first piece is small; each piece is synthesised on the
engine's worker pool while the previous one is being sent, so there is always exactly
one piece in flight per stream (flat memory for any length of text). Each piece is
faded in and out over a few milliseconds and followed by the pause its punctuation
calls for, so the joins are silent-to-silent and never click.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from typing import Any, AsyncIterator, Callable

import av
import numpy as np

from local_engines import text as text_mod
from local_engines.base import Engine, EngineVoice, Utterance
from local_engines.pool import StreamGate, WorkerPool
from providers.base import PCM_SAMPLE_RATE

logger = logging.getLogger("voxrouter.engines")

FADE_S = 0.005
SILENCE = 0.004  # below this a sample counts as silence when trimming a piece's edges
LEAD_S, TAIL_S = 0.03, 0.06  # silence kept before and after the speech of each piece


@dataclasses.dataclass(frozen=True)
class RunnerSettings:
    workers: int = 1  # inference threads (each may use several onnxruntime threads)
    max_streams: int = 4  # streams synthesising at once
    max_queue: int = 16  # streams waiting for a slot before new ones get 429
    queue_timeout_s: float = 30.0  # how long a stream may wait for a slot (then 503)


class EngineRunner:
    def __init__(self, engine: Engine, settings: RunnerSettings = RunnerSettings()) -> None:
        self.engine = engine
        self.settings = settings
        self.pool = WorkerPool(f"engine-{engine.id}", settings.workers)
        self.gate = StreamGate(settings.max_streams, settings.max_queue, settings.queue_timeout_s)
        self.on_rtf: Callable[[str, float], None] | None = None  # (engine id, compute s / audio s) per piece
        self._load_lock = threading.Lock()
        self._loaded = False
        self.load_error: BaseException | None = None

    @property
    def loaded(self) -> bool:
        return self._loaded

    def missing(self) -> str | None:
        return None if self._loaded else self.engine.missing()

    def load(self) -> None:
        """Load the engine once (blocking); later calls return at once. A failed load is
        remembered, so status reports the engine unavailable until the process restarts."""
        with self._load_lock:
            if self._loaded:
                return
            started = time.perf_counter()
            try:
                self.engine.load()
            except Exception as exc:
                self.load_error = exc
                raise
            self._loaded = True
            logger.info("engine %s loaded in %.2fs", self.engine.id, time.perf_counter() - started)

    async def ensure_loaded(self) -> None:
        if not self._loaded:
            await asyncio.to_thread(self.load)

    def voices(self) -> list[EngineVoice]:
        return self.engine.voices()

    def utterance(self, voice: str, speed: float | None, options: dict[str, Any]) -> Utterance:
        return self.engine.utterance(voice, speed, options)

    async def stream(self, text: str, utterance: Utterance) -> AsyncIterator[bytes]:
        """PCM for the whole text. Raises EngineBusy before any audio when no slot is free."""
        async with self.gate.admit():
            await self.ensure_loaded()
            async for pcm in self._pieces(text, utterance):
                yield pcm

    async def _pieces(self, text: str, utterance: Utterance) -> AsyncIterator[bytes]:
        engine = self.engine
        language = _text_language(engine, text, utterance)
        pieces = text_mod.split(
            text, first_chunk_chars=engine.first_chunk_chars, max_chunk_chars=engine.max_chunk_chars, language=language
        )
        resample = _Resampler(engine.sample_rate) if engine.sample_rate != PCM_SAMPLE_RATE else None
        started = time.monotonic()
        audio_s = 0.0

        def submit(piece: text_mod.Chunk | None, deadline: float) -> asyncio.Task[np.ndarray] | None:
            if piece is None:
                return None
            return asyncio.ensure_future(self.pool.run(deadline, self._synthesize, piece.text, utterance))

        piece = next(pieces, None)
        job = submit(piece, started)
        try:
            while piece is not None and job is not None:
                samples = await job
                following = next(pieces, None)
                # The next piece is due when the audio sent so far (this piece included) runs out.
                audio_s += len(samples) / engine.sample_rate + piece.pause_after_s
                job = submit(following, started + audio_s)
                pcm = _to_pcm(_join(samples, engine.sample_rate, piece.pause_after_s), resample)
                if pcm:
                    yield pcm
                piece = following
            if resample is not None:
                tail = resample.flush()
                if tail:
                    yield tail
        finally:
            if job is not None and not job.done():
                job.cancel()
                with contextlib.suppress(BaseException):
                    await job

    def _synthesize(self, text: str, utterance: Utterance) -> np.ndarray:
        """One piece on a worker thread, its real-time factor reported to `on_rtf`."""
        started = time.perf_counter()
        samples = self.engine.synthesize(text, utterance)
        if self.on_rtf is not None and len(samples):
            self.on_rtf(self.engine.id, (time.perf_counter() - started) * self.engine.sample_rate / len(samples))
        return samples

    def close(self) -> None:
        self.pool.close()
        self.engine.close()


def _text_language(engine: Engine, text: str, utterance: Utterance) -> str:
    pick = getattr(engine, "text_language", None)
    return pick(text, utterance) if pick else utterance.voice.language


def _join(samples: np.ndarray, sample_rate: int, pause_s: float) -> np.ndarray:
    """Trim the silence the model left at the piece's edges, fade them to zero and append
    the pause the punctuation calls for: every join meets at silence, and the pauses
    between pieces are the ones we chose rather than whatever the model padded."""
    audio = np.asarray(samples, dtype=np.float32).reshape(-1)
    loud = np.flatnonzero(np.abs(audio) > SILENCE)
    if loud.size:
        start = max(0, int(loud[0]) - int(LEAD_S * sample_rate))
        end = min(len(audio), int(loud[-1]) + int(TAIL_S * sample_rate))
        audio = audio[start:end]
    audio = audio.copy()
    fade = min(int(FADE_S * sample_rate), len(audio) // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        audio[:fade] *= ramp
        audio[-fade:] *= ramp[::-1]
    pause = int(round(pause_s * sample_rate))
    if pause:
        audio = np.concatenate([audio, np.zeros(pause, dtype=np.float32)])
    return audio


def _to_pcm(audio: np.ndarray, resample: "_Resampler | None") -> bytes:
    if resample is not None:
        return resample.push(audio)
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


class _Resampler:
    """Streaming resampling to 24 kHz (one resampler per stream keeps the filter state across pieces)."""

    def __init__(self, source_rate: int) -> None:
        self._rate = source_rate
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=PCM_SAMPLE_RATE)
        self._pts = 0

    def push(self, audio: np.ndarray) -> bytes:
        frame = av.AudioFrame.from_ndarray(np.clip(audio, -1.0, 1.0).reshape(1, -1).astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = self._rate
        frame.pts = self._pts
        self._pts += len(audio)
        return b"".join(bytes(out.planes[0])[: out.samples * 2] for out in self._resampler.resample(frame))

    def flush(self) -> bytes:
        return b"".join(bytes(out.planes[0])[: out.samples * 2] for out in self._resampler.resample(None))
