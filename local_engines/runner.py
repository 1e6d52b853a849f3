"""An engine at work: text in, a stream of 24 kHz s16le PCM out, piece by piece.

The text is split so the first piece is small; each piece is synthesised on the
engine's worker pool while the previous one is being sent, so there is always exactly
one job in flight per stream (flat memory for any length of text). An engine that can
(`Engine.plan`: Piper, Kokoro) cuts each piece into runs of bounded phonemes, and
each run is a job of its own, streamed as soon as it is done: no job holds a worker for
long, and between jobs the stream is checked for cancellation and for its budget. Each
piece (or run) is faded in and out over a few milliseconds and followed by the pause its
punctuation calls for, so the joins are silent-to-silent and never click.

Budgets are compute time on the workers (not time queued, nor time the client takes to
read), proportional to the text: a request may use `budget_base_s + budget_per_char_s`
per budget character of its normalised text (`text.budget_chars`: CJK and symbols count
more), one piece `piece_budget_base_s + piece_budget_per_char_s` per budget character of
the piece. A stream past either ends with EngineTimeout. Text with nothing to say (no
letter or digit), or whose pieces all come back silent, raises NothingToSpeak, the
client's fault, rather than ending with no audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from typing import Any, AsyncIterator, Callable, TypeVar

import av
import numpy as np

from voxrouter.local_engines import text as text_mod
from voxrouter.local_engines.base import PCM_SAMPLE_RATE, Engine, EngineTimeout, EngineVoice, NothingToSpeak, Utterance
from voxrouter.local_engines.pool import StreamGate, WorkerPool

logger = logging.getLogger("voxrouter.engines")
T = TypeVar("T")

FADE_S = 0.005
SILENCE = 0.004  # below this a sample counts as silence when trimming a piece's edges
LEAD_S, TAIL_S = 0.03, 0.06  # silence kept before and after the speech of each piece


@dataclasses.dataclass(frozen=True)
class RunnerSettings:
    workers: int = 1  # inference threads (each may use several onnxruntime threads)
    max_streams: int = 4  # streams synthesising at once
    max_queue: int = 16  # streams waiting for a slot before new ones get 429
    queue_timeout_s: float = 30.0  # how long a stream may wait for a slot (then 503)
    max_streams_per_tenant: int | None = None  # one organization's share of max_streams (None: half)
    # Compute time a request may use: this much, plus this much per budget character of its text.
    budget_base_s: float = 30.0
    budget_per_char_s: float = 0.15
    # ... and one piece of it (a piece is at most the engine's max_chunk_chars budget characters).
    piece_budget_base_s: float = 15.0
    piece_budget_per_char_s: float = 0.15

    def request_budget_s(self, budget_chars: int) -> float:
        return self.budget_base_s + self.budget_per_char_s * budget_chars

    def piece_budget_s(self, budget_chars: int) -> float:
        return self.piece_budget_base_s + self.piece_budget_per_char_s * budget_chars


class _Stream:
    """What a stream's jobs share with the worker threads: whether the stream is gone."""

    def __init__(self) -> None:
        self.cancelled = False


class _Timing:
    """One job's time on a worker: when it started there (None while queued) and for how long it ran."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.elapsed = 0.0


class _StreamGone(Exception):
    """A job picked up after its stream ended: nothing to do."""


class EngineRunner:
    def __init__(self, engine: Engine, settings: RunnerSettings = RunnerSettings()) -> None:
        self.engine = engine
        self.settings = settings
        self.pool = WorkerPool(f"engine-{engine.id}", settings.workers)
        share = settings.max_streams_per_tenant or -(-settings.max_streams // 2)
        self.gate = StreamGate(settings.max_streams, settings.max_queue, settings.queue_timeout_s, share)
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

    async def stream(self, text: str, utterance: Utterance, tenant: str = "") -> AsyncIterator[bytes]:
        """PCM for the whole text, for `tenant` (its share of the stream slots is bounded).
        Raises EngineBusy before any audio when no slot is free."""
        async with self.gate.admit(tenant):
            await self.ensure_loaded()
            async for pcm in self._pieces(text, utterance, tenant):
                yield pcm

    async def _pieces(self, text: str, utterance: Utterance, tenant: str = "") -> AsyncIterator[bytes]:
        engine = self.engine
        settings = self.settings
        language = engine.text_language(text, utterance)
        # A long text is normalised on a worker thread: the regex passes would hold up every other stream.
        spoken = await asyncio.to_thread(text_mod.normalize, text, language) if len(text) > 2_000 else text_mod.normalize(text, language)
        if not text_mod.has_speech(spoken):
            raise NothingToSpeak("the text has nothing to speak: no letter or digit (only punctuation, symbols, emoji or the like)")
        budget_s = settings.request_budget_s(text_mod.budget_chars(spoken))
        growth = getattr(engine, "piece_growth", text_mod.DEFAULT_GROWTH)
        pieces = text_mod.cut(spoken, first_chunk_chars=engine.first_chunk_chars, max_chunk_chars=engine.max_chunk_chars, growth=growth)
        resample = _Resampler(engine.sample_rate) if engine.sample_rate != PCM_SAMPLE_RATE else None
        stream = _Stream()
        started = time.monotonic()
        audio_s = spent_s = piece_spent_s = 0.0
        spoke = piece_spoke = False

        def submit(deadline: float, fn: Callable[..., Any], *args: Any) -> tuple[_Timing, asyncio.Task[Any]]:
            timing = _Timing()
            return timing, asyncio.ensure_future(self.pool.run(deadline, self._timed, stream, timing, fn, *args, tenant=tenant))

        def begin(piece: text_mod.Chunk | None, deadline: float) -> tuple[_Timing, asyncio.Task[Any]] | None:
            return None if piece is None else submit(deadline, self._begin_piece, piece.text, utterance)

        piece = next(pieces, None)
        piece_budget_s = settings.piece_budget_s(text_mod.budget_chars(piece.text)) if piece else 0.0
        job = begin(piece, started)
        try:
            while piece is not None and job is not None:
                timing, task = job
                whole = budget_s - spent_s <= piece_budget_s - piece_spent_s  # which budget runs out first
                allowed_s = min(budget_s - spent_s, piece_budget_s - piece_spent_s)
                samples, runs = await self._finish(timing, task, allowed_s, self._timeout(budget_s, piece_budget_s, whole))
                spent_s += timing.elapsed
                piece_spent_s += timing.elapsed
                if spent_s > budget_s or piece_spent_s > piece_budget_s:
                    raise self._timeout(budget_s, piece_budget_s, spent_s > budget_s)
                piece_spoke = piece_spoke or len(samples) > 0
                spoke = spoke or len(samples) > 0
                following = piece if runs else next(pieces, None)
                # A piece that gave no audio at all is skipped, its pause too.
                pause_s = piece.pause_after_s if not runs and piece_spoke else 0.0
                # The next job is due when the audio sent so far (this job's included) runs out.
                audio_s += len(samples) / engine.sample_rate + pause_s
                if runs:
                    job = submit(started + audio_s, self._render, runs, utterance)
                else:
                    job = begin(following, started + audio_s)
                    if following is not None:
                        piece_budget_s = settings.piece_budget_s(text_mod.budget_chars(following.text))
                    piece_spent_s, piece_spoke = 0.0, False
                if len(samples) or pause_s:
                    pcm = _to_pcm(_join(samples, engine.sample_rate, pause_s), resample)
                    if pcm:
                        yield pcm
                piece = following
            if not spoke:
                raise NothingToSpeak("the engine found nothing to speak in the text")
            if resample is not None:
                tail = resample.flush()
                if tail:
                    yield tail
        finally:
            stream.cancelled = True  # a job already queued or running ends at its next step
            if job is not None and not job[1].done():
                job[1].cancel()
                with contextlib.suppress(BaseException):
                    await job[1]

    async def _finish(self, timing: _Timing, task: asyncio.Task[Any], allowed_s: float, timeout: EngineTimeout) -> Any:
        """The job's result; EngineTimeout once it has run on its worker for `allowed_s` (what is
        left of the request's and the piece's budgets). Time queued does not count."""
        while True:
            if timing.started is None:
                wait_s = max(allowed_s, 0.05)
            else:
                wait_s = timing.started + allowed_s - time.monotonic()
                if wait_s <= 0:
                    task.cancel()  # the worker finishes the inference it is in, and its result is dropped
                    raise timeout
            done, _ = await asyncio.wait({task}, timeout=wait_s)
            if done:
                return task.result()

    def _timeout(self, budget_s: float, piece_budget_s: float, whole: bool) -> EngineTimeout:
        if whole:
            return EngineTimeout(f"{self.engine.id}: the text used up its synthesis budget of {budget_s:.0f}s")
        return EngineTimeout(f"{self.engine.id}: one piece of the text used up its synthesis budget of {piece_budget_s:.0f}s")

    def _timed(self, stream: _Stream, timing: _Timing, fn: Callable[..., T], *args: Any) -> T:
        """On a worker: run one job of `stream`, timing it; nothing when the stream is gone."""
        if stream.cancelled:
            raise _StreamGone()
        timing.started = time.monotonic()
        try:
            return fn(*args)
        finally:
            timing.elapsed = time.monotonic() - timing.started

    def _begin_piece(self, text: str, utterance: Utterance) -> tuple[np.ndarray, list[Any]]:
        """One piece's first job: its runs planned and the first rendered (the whole piece is one
        run for an engine that does not cut it). Returns the audio and the runs still to render."""
        runs = list(self.engine.plan(text, utterance))
        if not runs:
            return np.zeros(0, dtype=np.float32), []
        return self._render(runs, utterance)

    def _render(self, runs: list[Any], utterance: Utterance) -> tuple[np.ndarray, list[Any]]:
        return self._observed(self.engine.render, runs[0], utterance), runs[1:]

    def _observed(self, fn: Callable[[Any, Utterance], np.ndarray], what: Any, utterance: Utterance) -> np.ndarray:
        """One inference on a worker thread, its real-time factor reported to `on_rtf`."""
        started = time.perf_counter()
        samples = fn(what, utterance)
        if self.on_rtf is not None and len(samples):
            self.on_rtf(self.engine.id, (time.perf_counter() - started) * self.engine.sample_rate / len(samples))
        return samples

    def close(self) -> None:
        self.pool.close()
        self.engine.close()


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
