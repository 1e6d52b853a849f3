"""A transcript in each of OpenAI's `response_format`s: json, text, srt, verbose_json, vtt, and
the SSE events of `stream=true`. Pure functions of the transcript."""

from __future__ import annotations

from typing import Iterable, Sequence

from pydantic import BaseModel

from voxrouter.providers.transcription import Segment, Transcript
from voxrouter.router import schemas

CONTENT_TYPES = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "text/plain; charset=utf-8",  # as OpenAI serves them
    "vtt": "text/plain; charset=utf-8",
}


def timestamp(seconds: float, separator: str) -> str:
    """HH:MM:SS{separator}mmm, rounded to the millisecond (srt: ",", vtt: "."); negative is 0."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def _cues(segments: Sequence[Segment]) -> list[tuple[float, float, str]]:
    """(start, end, text) of each segment with words, in order, never ending before it starts."""
    cues = []
    for segment in segments:
        text = " ".join(segment.text.split())
        if text:
            cues.append((segment.start, max(segment.start, segment.end), text.replace("-->", "->")))
    return cues


def srt(segments: Sequence[Segment]) -> str:
    blocks = [
        f"{index}\n{timestamp(start, ',')} --> {timestamp(end, ',')}\n{text}\n\n"
        for index, (start, end, text) in enumerate(_cues(segments), 1)
    ]
    return "".join(blocks)


def vtt(segments: Sequence[Segment]) -> str:
    blocks = [f"{timestamp(start, '.')} --> {timestamp(end, '.')}\n{text}\n\n" for start, end, text in _cues(segments)]
    return "WEBVTT\n\n" + "".join(blocks)


def usage(duration_ms: int) -> schemas.TranscriptionUsage:
    return schemas.TranscriptionUsage(seconds=round(duration_ms / 1000, 3))


def verbose(
    transcript: Transcript, granularities: Iterable[str], duration_ms: int, temperature: float, task: str = "transcribe"
) -> schemas.TranscriptionVerboseOut:
    """verbose_json: segments unless only words were asked for (OpenAI's default is segment)."""
    wanted = set(granularities) or {"segment"}
    words = None
    if "word" in wanted:
        words = [schemas.TranscriptWordOut(word=w.word, start=round(w.start, 3), end=round(w.end, 3)) for w in transcript.words]
    segments = None
    if "segment" in wanted:
        segments = [
            schemas.TranscriptSegmentOut(
                id=s.id, seek=round(s.start * 100), start=round(s.start, 3), end=round(s.end, 3), text=s.text,
                temperature=temperature,
            )
            for s in transcript.segments
        ]
    return schemas.TranscriptionVerboseOut(
        task="translate" if task == "translate" else "transcribe",
        language=transcript.language,
        duration=round(duration_ms / 1000, 3),
        text=transcript.text,
        words=words,
        segments=segments,
        usage=usage(duration_ms),
    )


def render(
    transcript: Transcript,
    response_format: str,
    granularities: Iterable[str],
    duration_ms: int,
    temperature: float,
    task: str = "transcribe",
) -> str:
    """The response body of one non-streaming transcription."""
    if response_format == "text":
        return transcript.text + "\n"
    if response_format == "srt":
        return srt(transcript.segments)
    if response_format == "vtt":
        return vtt(transcript.segments)
    if response_format == "verbose_json":
        out = verbose(transcript, granularities, duration_ms, temperature, task)
        return out.model_dump_json(exclude_none=True)
    return schemas.TranscriptionOut(text=transcript.text, usage=usage(duration_ms)).model_dump_json()


def sse_events(transcript: Transcript, duration_ms: int) -> list[bytes]:
    """`stream=true`: a `transcript.text.delta` per segment (the first without a leading space),
    then `transcript.text.done` with the whole text; the deltas join to exactly that text."""
    events: list[bytes] = []
    pieces = [text for segment in transcript.segments if (text := segment.text.strip())]
    for index, piece in enumerate(pieces):
        delta = piece if index == 0 else " " + piece
        events.append(_event(schemas.TranscriptTextDelta(delta=delta)))
    done = schemas.TranscriptTextDone(text="".join(p if i == 0 else " " + p for i, p in enumerate(pieces)), usage=usage(duration_ms))
    events.append(_event(done))
    return events


def _event(event: BaseModel) -> bytes:
    return b"data: " + event.model_dump_json().encode() + b"\n\n"
