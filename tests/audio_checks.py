"""Decode what the gateway returned and measure it, so tests assert on real audio."""

from __future__ import annotations

import io

import av
import numpy as np


def decoded_duration_s(data: bytes, fmt: str) -> float:
    if fmt == "pcm":
        return len(data) / 2 / 24_000
    with av.open(io.BytesIO(data)) as container:
        samples = 0
        rate = 0
        for frame in container.decode(audio=0):
            samples += frame.samples
            rate = frame.sample_rate
    return samples / rate if rate else 0.0


def pcm_rms(data: bytes) -> float:
    samples = np.frombuffer(data[: len(data) - len(data) % 2], "<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


def median_pitch_hz(data: bytes, sample_rate: int = 24_000) -> float:
    """The median fundamental frequency of the voiced 40 ms frames of s16le mono PCM, by
    autocorrelation in 60-400 Hz (a frame counts as voiced when it is loud and periodic)."""
    samples = np.frombuffer(data[: len(data) - len(data) % 2], "<i2").astype(np.float64) / 32768.0
    frame, hop = int(0.04 * sample_rate), int(0.01 * sample_rate)
    low, high = sample_rate // 400, sample_rate // 60
    loud = 0.3 * float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
    pitches: list[float] = []
    for start in range(0, len(samples) - frame, hop):
        x = samples[start : start + frame]
        x = x - x.mean()
        if np.sqrt(np.mean(x**2)) < loud:
            continue
        corr = np.correlate(x, x, mode="full")[frame - 1 :]
        if corr[0] <= 0:
            continue
        lag = low + int(np.argmax(corr[low:high]))
        if corr[lag] / corr[0] >= 0.5:  # periodic enough to be voiced
            pitches.append(sample_rate / lag)
    return float(np.median(pitches)) if pitches else 0.0
