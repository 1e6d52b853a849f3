"""What happens to the audio on its way to the client: metered when it is PCM, framed as
OpenAI's speech SSE events when the client asked for them."""

from __future__ import annotations

import base64
from typing import AsyncIterator

from voxrouter.providers.base import PCM_SAMPLE_RATE
from voxrouter.router.ops import metrics
from voxrouter.router.schemas import SpeechAudioDelta, SpeechAudioDone, SpeechAudioTimestamps, SpeechUsage, SpeechWord
from voxrouter.router.speech.timestamps import WordAligner
from voxrouter.router.speech.wordmatch import TimedWord


class AudioMeter:
    """Audio of a PCM stream (16-bit mono at 24 kHz) as it passes: for the metrics, and for
    the bill of models priced by audio length."""

    def __init__(self) -> None:
        self.pcm_bytes = 0

    @property
    def audio_ms(self) -> int:
        return -(-self.pcm_bytes * 1000 // (2 * PCM_SAMPLE_RATE))

    async def count(self, chunks: AsyncIterator[bytes], provider: str) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self.pcm_bytes += len(chunk)
            metrics.AUDIO_SECONDS.labels(provider).inc(len(chunk) / (2 * PCM_SAMPLE_RATE))
            yield chunk


async def sse_events(
    chunks: AsyncIterator[bytes], characters: int, aligner: WordAligner | None = None
) -> AsyncIterator[bytes]:
    """OpenAI's speech SSE shape: audio deltas, then a done event with usage; with an `aligner`
    (which taps `chunks`), `speech.audio.timestamps` events of the input's words among the deltas
    as their times become known, the last ones before done."""
    try:
        async for chunk in chunks:
            event = SpeechAudioDelta(audio=base64.b64encode(chunk).decode("ascii"))
            yield b"data: " + event.model_dump_json().encode() + b"\n\n"
            if aligner is not None and (words := aligner.ready()):
                yield _timestamps(words)
        if aligner is not None and (words := await aligner.finish()):
            yield _timestamps(words)
    finally:
        if aligner is not None:
            aligner.close()
    # Upstreams bill characters, not tokens: report the usual ~4 characters per token.
    tokens = -(-characters // 4)
    done = SpeechAudioDone(usage=SpeechUsage(input_tokens=tokens, output_tokens=0, total_tokens=tokens))
    yield b"data: " + done.model_dump_json().encode() + b"\n\n"


def _timestamps(words: list[TimedWord]) -> bytes:
    event = SpeechAudioTimestamps(words=[SpeechWord(word=w.word, start=w.start, end=w.end) for w in words])
    return b"data: " + event.model_dump_json().encode() + b"\n\n"
