"""Word timestamps for any provider's speech by forced alignment: the local Whisper engine hears the
audio we stream (on its own worker threads, never the event loop) with word timestamps, and
`wordmatch` maps what it heard onto the input's words.

The audio is kept as it passes (`tap`: an append; the audio itself is never held up). PCM is heard
in stretches while it streams: once `stretch_s` seconds are pending, a stretch is cut at the
quietest 20 ms of its last second and heard in the background, one stretch at a time; the words
up to the last one heard as written are then final and `ready()` hands them out, so timestamps
events come among the audio deltas (lagging them by a stretch). The rest is heard by `finish()`
once the audio is over. Audio in an encoded format (an upstream that sends no PCM) is heard whole
at the end. Where the engine cannot hear a stretch (not installed, busy, undecodable), its words
are spread over its time by their lengths, so every input word is still listed once."""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

import numpy as np

from voxrouter.local_engines.base import EngineError
from voxrouter.local_engines.pool import EngineBusy
from voxrouter.local_engines.whisper import SAMPLE_RATE, WhisperEngine, decode_audio
from voxrouter.providers.base import PCM_SAMPLE_RATE
from voxrouter.router.speech.wordmatch import TimedWord, align_words, input_words, matched_prefix

logger = logging.getLogger("voxrouter.speech")

PCM_BYTES_PER_S = 2 * PCM_SAMPLE_RATE
_FRAME_BYTES = PCM_BYTES_PER_S // 50  # 20 ms


def pcm_to_whisper(pcm: bytes) -> np.ndarray:
    """16-bit mono PCM at the gateway's rate (24 kHz) as Whisper's float32 mono at 16 kHz."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], "<i2").astype(np.float32) / 32768.0
    if samples.size == 0:
        return samples
    count = max(1, int(round(samples.size * SAMPLE_RATE / PCM_SAMPLE_RATE)))
    positions = np.arange(count, dtype=np.float64) * (PCM_SAMPLE_RATE / SAMPLE_RATE)
    return np.interp(positions, np.arange(samples.size), samples).astype(np.float32)


def quiet_cut(pcm: bytes | bytearray, start: int, end: int, search_bytes: int = PCM_BYTES_PER_S) -> int:
    """A byte offset in (start, end] to cut PCM at: the middle of the quietest 20 ms frame in the
    last `search_bytes` before `end` (so a stretch rarely ends inside a word)."""
    lo = max(start, end - search_bytes)
    lo += (lo - start) % 2
    frames = (end - lo) // _FRAME_BYTES
    if frames < 2:
        return end
    window = np.frombuffer(bytes(pcm[lo : lo + frames * _FRAME_BYTES]), "<i2").astype(np.float32).reshape(frames, -1)
    energy = np.mean(window**2, axis=1)
    quietest = frames - 1 - int(np.argmin(energy[::-1]))  # the latest of equally quiet frames
    return lo + quietest * _FRAME_BYTES + _FRAME_BYTES // 2


class WordAligner:
    """One response's audio, heard in stretches as it streams, aligned to its input text."""

    def __init__(self, engine: WhisperEngine, text: str, *, tenant: str = "", stretch_s: float = 6.0) -> None:
        self.engine = engine
        self.words = input_words(text)
        self.tenant = tenant
        self.stretch_bytes = max(_FRAME_BYTES * 10, int(stretch_s * PCM_BYTES_PER_S) // 2 * 2)
        self._format: str | None = None
        self._audio = bytearray()
        self._cut = 0  # PCM bytes handed to a stretch so far
        self._task: asyncio.Task[list[TimedWord]] | None = None
        self._heard: list[TimedWord] = []  # heard and not yet matched to an emitted word
        self._emitted = 0  # input words handed out
        self._floor = 0.0  # where the last handed-out word ends

    async def tap(self, chunks: AsyncIterator[bytes], audio_format: str) -> AsyncIterator[bytes]:
        """`chunks` unchanged, kept for hearing (`audio_format` "pcm": 24 kHz 16-bit mono, heard in stretches)."""
        self._format = audio_format
        async for chunk in chunks:
            self._audio += chunk
            if audio_format == "pcm" and self._task is None and len(self._audio) - self._cut >= self.stretch_bytes:
                end = quiet_cut(self._audio, self._cut, len(self._audio) // 2 * 2)
                self._task = asyncio.create_task(self._hear_pcm(self._cut, end))
                self._cut = end
            yield chunk

    def ready(self) -> list[TimedWord]:
        """Words whose times are final since the last call (none while a stretch is being heard)."""
        if self._task is None or not self._task.done():
            return []
        heard, self._task = self._task.result(), None
        self._heard += heard
        count, used = matched_prefix(self.words[self._emitted :], self._heard)
        if count == 0:
            return []
        end = self._heard[used - 1].end
        return self._hand_out(count, self._heard[:used], end, used)

    async def finish(self) -> list[TimedWord]:
        """Every input word not handed out yet, once the audio is over."""
        ready: list[TimedWord] = []
        if self._task is not None:
            await asyncio.wait([self._task])
            ready = self.ready()
        if self._emitted >= len(self.words):
            return ready
        if self._format == "pcm" or self._format is None:
            end = len(self._audio) // 2 * 2
            self._heard += await self._hear_pcm(self._cut, end) if end > self._cut else []
            duration = end / PCM_BYTES_PER_S
        else:
            heard, duration = await self._hear_encoded()
            self._heard += heard
        rest = len(self.words) - self._emitted
        return ready + self._hand_out(rest, self._heard, duration, len(self._heard))

    def close(self) -> None:
        """Stop hearing (the client went away)."""
        if self._task is not None:
            self._task.cancel()

    def _hand_out(self, count: int, heard: list[TimedWord], end: float, used: int) -> list[TimedWord]:
        words = self.words[self._emitted : self._emitted + count]
        timed = align_words(words, heard, max(end, self._floor), start=self._floor)
        self._emitted += count
        self._heard = self._heard[used:]
        self._floor = timed[-1].end if timed else self._floor
        return timed

    async def _hear_pcm(self, start: int, end: int) -> list[TimedWord]:
        offset = start / PCM_BYTES_PER_S
        heard = await self._hear(pcm_to_whisper(bytes(self._audio[start:end])))
        return [TimedWord(w.word, w.start + offset, w.end + offset) for w in heard]

    async def _hear_encoded(self) -> tuple[list[TimedWord], float]:
        try:
            samples = await asyncio.to_thread(decode_audio, bytes(self._audio), max_audio_s=self.engine.max_audio_s)
        except EngineError as exc:
            logger.warning("word timestamps: the audio does not decode (%s); times spread by word length", exc)
            return [], 0.0
        return await self._hear(samples), samples.size / SAMPLE_RATE

    async def _hear(self, samples: np.ndarray) -> list[TimedWord]:
        if samples.size < SAMPLE_RATE // 10:
            return []
        try:
            transcript = await self.engine.transcribe_async(samples, word_timestamps=True, tenant=self.tenant)
        except (EngineError, EngineBusy) as exc:
            logger.warning("word timestamps: the audio was not heard (%s); times spread by word length", exc)
            return []
        return [TimedWord(word.word, word.start, word.end) for word in transcript.words]

