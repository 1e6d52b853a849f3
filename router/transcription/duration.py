"""How long an upload is, measured by decoding it (PyAV): what a transcription is priced on.
A container's own duration field is never trusted (it can be absent, or lie); every frame is
decoded and its samples counted, up to a cap."""

from __future__ import annotations

import io

import anyio


class InvalidAudio(Exception):
    """The bytes are not audio FFmpeg decodes (or hold no samples): the client's 400 `invalid_audio`."""


class AudioTooLong(Exception):
    """More audio than the gateway transcribes in one request."""


def measure_ms(data: bytes, max_audio_s: float) -> int:
    """The audio's duration in whole milliseconds (rounded up), from its decoded samples.
    Blocking: call `measure_ms_async` from the event loop."""
    import av

    if not data:
        raise InvalidAudio("the file is empty")
    counted: dict[int, int] = {}  # sample rate -> samples decoded at it (a rate may change mid-stream)
    limit_ms = int(max_audio_s * 1000)
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise InvalidAudio("the file has no audio stream")
            for frame in container.decode(stream):
                if frame.sample_rate > 0:
                    counted[frame.sample_rate] = counted.get(frame.sample_rate, 0) + frame.samples
                    if _ms(counted) > limit_ms + 100:
                        raise AudioTooLong(f"the audio is longer than {max_audio_s:g}s")
    except av.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise InvalidAudio(f"the audio cannot be decoded: {reason}") from None
    duration = _ms(counted)
    if duration == 0:
        raise InvalidAudio("the file holds no audio samples")
    return duration


def _ms(counted: dict[int, int]) -> int:
    """Whole milliseconds, rounded up, of the samples counted at each rate."""
    micros = sum(samples * 1_000_000 // rate for rate, samples in counted.items())
    return -(-micros // 1000)


async def measure_ms_async(data: bytes, max_audio_s: float) -> int:
    """`measure_ms` on a worker thread: decoding 25 MB of audio never blocks the event loop."""
    return await anyio.to_thread.run_sync(measure_ms, data, max_audio_s)
