"""Realistic audio for the emulators: a voiced-like tone, encoded with PyAV like a vendor would."""

from __future__ import annotations

import functools
import io
import struct

import av
import numpy as np

RATE = 24_000


def tone_pcm(duration_s: float, rate: int = RATE) -> bytes:
    """16-bit LE mono: a 180 Hz tone with harmonics and a syllable-rate envelope."""
    t = np.arange(int(duration_s * rate)) / rate
    wave = sum(np.sin(2 * np.pi * 180 * k * t) / k for k in (1, 2, 3))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    return (wave * envelope * 9000).astype("<i2").tobytes()


def wav_bytes(pcm: bytes, rate: int = RATE) -> bytes:
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(pcm), b"WAVE", b"fmt ", 16, 1, 1, rate, rate * 2, 2, 16, b"data", len(pcm)
    )
    return header + pcm


_CONTAINERS = {"mp3": ("mp3", "libmp3lame", RATE), "opus": ("ogg", "libopus", 48_000), "aac": ("adts", "aac", RATE), "flac": ("flac", "flac", RATE)}


@functools.lru_cache(maxsize=64)
def encoded(fmt: str, duration_s: float) -> bytes:
    pcm = tone_pcm(duration_s)
    if fmt == "pcm":
        return pcm
    if fmt == "wav":
        return wav_bytes(pcm)
    container_format, codec, rate = _CONTAINERS[fmt]
    out = io.BytesIO()
    with av.open(out, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm, "<i2").reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def split(data: bytes, chunks: int) -> list[bytes]:
    size = max(1, -(-len(data) // max(1, chunks)))
    return [data[i : i + size] for i in range(0, len(data), size)]
