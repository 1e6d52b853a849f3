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
