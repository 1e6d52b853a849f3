"""Audio formats on the wire and a streaming transcoder (PyAV) from 24 kHz s16le mono PCM.

When an upstream cannot produce the format a client asked for, the adapter is asked
for PCM and the stream is encoded here chunk by chunk; nothing buffers the whole clip.
"""

from __future__ import annotations

import struct
from typing import AsyncIterator, Iterable

import av
import numpy as np

from voxrouter.providers.base import PCM_SAMPLE_RATE, ProviderError

CONTENT_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": f"audio/l16; rate={PCM_SAMPLE_RATE}; channels=1",
}

# format -> (container, codec, encoder sample rate)
_ENCODERS: dict[str, tuple[str, str, int]] = {
    "mp3": ("mp3", "libmp3lame", PCM_SAMPLE_RATE),
    "opus": ("ogg", "libopus", 48_000),
    "aac": ("adts", "aac", PCM_SAMPLE_RATE),
    "flac": ("flac", "flac", PCM_SAMPLE_RATE),
}

# Ogg holds pages for up to a second by default; 100 ms pages keep the stream flowing.
_MUXER_OPTIONS: dict[str, dict[str, str]] = {"opus": {"page_duration": "100000"}}


def streaming_wav_header(sample_rate: int = PCM_SAMPLE_RATE) -> bytes:
    """A WAV header for a stream of unknown length (sizes set to the maximum, as OpenAI does)."""
    unknown = 0xFFFFFFFF
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", unknown, b"WAVE", b"fmt ", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16, b"data", unknown,
    )


class _Sink:
    """A write-only, non-seekable file for the muxer; drained after every packet batch."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class PcmEncoder:
    """Feed s16le mono PCM in any chunk sizes; get encoded bytes back as soon as they exist."""

    def __init__(self, fmt: str, sample_rate: int = PCM_SAMPLE_RATE) -> None:
        container_format, codec, rate = _ENCODERS[fmt]
        self._sink = _Sink()
        self._container = av.open(self._sink, mode="w", format=container_format, options=_MUXER_OPTIONS.get(fmt))
        self._stream = self._container.add_stream(codec, rate=rate, layout="mono")
        self._input_rate = sample_rate
        self._pts = 0
        self._odd = b""

    def _mux(self, packets: Iterable[av.Packet]) -> None:
        for packet in packets:
            self._container.mux(packet)

    def feed(self, pcm: bytes) -> bytes:
        pcm = self._odd + pcm
        usable = len(pcm) - (len(pcm) % 2)
        self._odd = pcm[usable:]
        if usable:
            samples = np.frombuffer(pcm[:usable], dtype="<i2").reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = self._input_rate
            frame.pts = self._pts
            self._pts += samples.shape[1]
            self._mux(self._stream.encode(frame))
        return self._sink.drain()

    def finish(self) -> bytes:
        self._mux(self._stream.encode(None))
        self._container.close()
        return self._sink.drain()

    def close(self) -> None:
        """Release the encoder without flushing (the stream was abandoned)."""
        try:
            self._container.close()
        except Exception:  # closing a half-written container can fail; nothing is left to save
            pass


def upstream_format(requested: str, native: tuple[str, ...]) -> str:
    """What to ask the adapter for: the requested format when native, else raw PCM."""
    if requested in native:
        return requested
    if "pcm" not in native:
        raise ValueError(f"cannot produce {requested}: upstream offers neither it nor pcm")
    return "pcm"


async def transcode(pcm_chunks: AsyncIterator[bytes], fmt: str) -> AsyncIterator[bytes]:
    """Re-encode a PCM stream into `fmt`, yielding encoded bytes as they are produced."""
    if fmt == "pcm":
        async for chunk in pcm_chunks:
            yield chunk
        return
    if fmt == "wav":
        yield streaming_wav_header()
        async for chunk in pcm_chunks:
            yield chunk
        return
    encoder = PcmEncoder(fmt)
    finished = False
    try:
        try:
            async for chunk in pcm_chunks:
                out = encoder.feed(chunk)
                if out:
                    yield out
        except ProviderError:
            # The upstream broke mid-stream: flush what was encoded, so the client's
            # file ends on a whole frame instead of a corrupt tail, then report it.
            finished = True
            yield encoder.finish()
            raise
        finished = True
        tail = encoder.finish()
        if tail:
            yield tail
    finally:
        if not finished:
            encoder.close()
