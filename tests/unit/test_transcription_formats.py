"""Transcripts in OpenAI's response formats (router/transcription/formats.py): srt and vtt read
back by real subtitle parsers, verbose_json's granularities, the SSE events of stream=true."""

from __future__ import annotations

import json

import pytest
import srt
import webvtt

from voxrouter.providers.transcription import Segment, Transcript, Word
from voxrouter.router.transcription import formats

WORDS = [Word("Hello", 0.0, 0.42, 0.9), Word("there.", 0.42, 0.9, 0.9), Word("General", 61.5, 62.0, 0.8), Word("Kenobi!", 62.0, 3725.25, 0.8)]
SEGMENTS = [
    Segment(0, 0.0, 0.9, "Hello there.", WORDS[:2]),
    Segment(1, 0.9, 0.9, "   ", []),  # nothing said: no cue
    Segment(2, 61.5, 3725.25, "General  Kenobi! --> the end", WORDS[2:]),
]
TRANSCRIPT = Transcript(
    text="Hello there. General  Kenobi! --> the end", language="en", language_probability=1.0,
    duration=3725.3, segments=SEGMENTS, words=WORDS,
)


@pytest.mark.parametrize(
    ("seconds", "srt_stamp", "vtt_stamp"),
    [(0, "00:00:00,000", "00:00:00.000"), (1.2345, "00:00:01,234", "00:00:01.234"), (59.9996, "00:01:00,000", "00:01:00.000"),
     (3725.25, "01:02:05,250", "01:02:05.250"), (-0.1, "00:00:00,000", "00:00:00.000"), (360000.0, "100:00:00,000", "100:00:00.000")],
)  # fmt: skip
def test_timestamps(seconds: float, srt_stamp: str, vtt_stamp: str) -> None:
    assert formats.timestamp(seconds, ",") == srt_stamp
    assert formats.timestamp(seconds, ".") == vtt_stamp


def test_srt_parses_with_a_real_parser() -> None:
    text = formats.srt(SEGMENTS)
    cues = list(srt.parse(text))
    assert [cue.index for cue in cues] == [1, 2]
    assert [cue.content for cue in cues] == ["Hello there.", "General Kenobi! -> the end"]  # no cue-time arrow in text
    assert [(c.start.total_seconds(), c.end.total_seconds()) for c in cues] == [(0.0, 0.9), (61.5, 3725.25)]
    assert srt.compose(cues) == text  # the canonical form


def test_vtt_parses_with_a_real_parser() -> None:
    text = formats.vtt(SEGMENTS)
    assert text.startswith("WEBVTT\n\n")
    cues = list(webvtt.from_string(text))
    assert [cue.text for cue in cues] == ["Hello there.", "General Kenobi! -> the end"]
    assert [(cue.start, cue.end) for cue in cues] == [("00:00:00.000", "00:00:00.900"), ("00:01:01.500", "01:02:05.250")]


def test_no_speech_is_an_empty_but_valid_subtitle_file() -> None:
    assert list(srt.parse(formats.srt([]))) == []
    assert list(webvtt.from_string(formats.vtt([]))) == []


def test_a_segment_never_ends_before_it_starts() -> None:
    [cue] = srt.parse(formats.srt([Segment(0, 2.0, 1.5, "Backwards.")]))
    assert cue.start == cue.end


@pytest.mark.parametrize(
    ("granularities", "words", "segments"),
    [((), False, True), (("segment",), False, True), (("word",), True, False), (("word", "segment"), True, True)],
)
def test_verbose_json_granularities(granularities: tuple[str, ...], words: bool, segments: bool) -> None:
    body = json.loads(formats.render(TRANSCRIPT, "verbose_json", granularities, 3_725_300, 0.2))
    assert body["task"] == "transcribe" and body["language"] == "en" and body["duration"] == 3725.3
    assert body["usage"] == {"type": "duration", "seconds": 3725.3}
    assert ("words" in body) is words and ("segments" in body) is segments
    if words:
        assert body["words"][0] == {"word": "Hello", "start": 0.0, "end": 0.42}
    if segments:
        assert body["segments"][2]["seek"] == 6150 and body["segments"][2]["temperature"] == 0.2
        assert set(body["segments"][0]) == {
            "id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob", "compression_ratio", "no_speech_prob"
        }  # fmt: skip


def test_json_and_text() -> None:
    assert json.loads(formats.render(TRANSCRIPT, "json", (), 1500, 0.0)) == {
        "text": TRANSCRIPT.text, "usage": {"type": "duration", "seconds": 1.5},
    }  # fmt: skip
    assert formats.render(TRANSCRIPT, "text", (), 1500, 0.0) == TRANSCRIPT.text + "\n"


def test_sse_deltas_join_to_the_done_text() -> None:
    events = [json.loads(event.decode().removeprefix("data: ")) for event in formats.sse_events(TRANSCRIPT, 2500)]
    assert all(event.endswith(b"\n\n") for event in formats.sse_events(TRANSCRIPT, 2500))
    assert [e["type"] for e in events] == ["transcript.text.delta"] * 2 + ["transcript.text.done"]
    assert "".join(e["delta"] for e in events[:-1]) == events[-1]["text"] == "Hello there. General  Kenobi! --> the end"
    assert events[-1]["usage"] == {"type": "duration", "seconds": 2.5}


def test_sse_of_silence_is_just_done() -> None:
    silent = Transcript("", "en", 1.0, 1.0, [], [])
    events = [json.loads(event.decode().removeprefix("data: ")) for event in formats.sse_events(silent, 1000)]
    assert events == [{"type": "transcript.text.done", "text": "", "usage": {"type": "duration", "seconds": 1.0}}]
