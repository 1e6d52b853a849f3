"""Word timestamps for speech: matching what Whisper heard onto the input's words (wordmatch), the
request's `timestamps` option, and the SSE events around them."""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

import numpy as np
import pydantic
import pytest

from voxrouter.router.schemas import SpeechRequest
from voxrouter.router.speech import stream
from voxrouter.router.speech.timestamps import WordAligner, pcm_to_whisper, quiet_cut
from voxrouter.router.speech.wordmatch import TimedWord, align_words, input_words, matched_prefix, normalise


def heard(*words: tuple[str, float, float]) -> list[TimedWord]:
    return [TimedWord(*word) for word in words]


def check_contract(out: list[TimedWord], words: list[str], duration: float) -> None:
    assert [w.word for w in out] == words
    floor = 0.0
    for word in out:
        assert floor <= word.start <= word.end <= duration, out
        floor = word.end


def test_input_words_drop_punctuation_around_words_only() -> None:
    assert input_words("Hello, world! It's 3.5 — \"fine\"...  e-mail") == ["Hello", "world", "It's", "3.5", "fine", "e-mail"]
    assert normalise("It's") == "its" and normalise("Hello,") == "hello"


def test_every_word_heard_takes_its_own_time() -> None:
    words = input_words("The quick brown fox.")
    out = align_words(words, heard((" The", 0.1, 0.3), ("quick", 0.3, 0.6), ("brown", 0.6, 0.9), ("fox.", 0.9, 1.3)), 1.5)
    assert [(w.start, w.end) for w in out] == [(0.1, 0.3), (0.3, 0.6), (0.6, 0.9), (0.9, 1.3)]
    check_contract(out, words, 1.5)


def test_missed_words_are_interpolated_between_neighbours() -> None:
    words = input_words("one two three four five")
    out = align_words(words, heard(("one", 0.0, 0.4), ("five", 2.0, 2.4)), 2.5)
    check_contract(out, words, 2.5)
    assert out[0].start == 0.0 and out[-1].start == 2.0
    middle = out[1:4]
    assert middle[0].start == pytest.approx(0.4) and middle[-1].end == pytest.approx(2.0)
    assert middle[0].start < middle[1].start < middle[2].start  # spread, not stacked


def test_missed_words_at_the_edges_use_the_audio_bounds() -> None:
    words = input_words("alpha beta gamma")
    out = align_words(words, heard(("beta", 1.0, 1.5)), 3.0)
    check_contract(out, words, 3.0)
    assert out[0].start == 0.0 and out[0].end == pytest.approx(1.0)
    assert out[2].start == pytest.approx(1.5) and out[2].end == pytest.approx(3.0)


def test_extra_recognised_words_are_dropped() -> None:
    words = input_words("hello there")
    out = align_words(words, heard(("um", 0.0, 0.2), ("hello", 0.2, 0.5), ("uh", 0.5, 0.6), ("there", 0.6, 1.0), ("yeah", 1.0, 1.2)), 1.3)
    assert [(w.word, w.start, w.end) for w in out] == [("hello", 0.2, 0.5), ("there", 0.6, 1.0)]


def test_numbers_heard_as_words_share_their_time() -> None:
    words = input_words("Open at 9 and pay $25 today")
    out = align_words(
        words,
        heard(("Open", 0.0, 0.3), ("at", 0.3, 0.4), ("nine", 0.4, 0.8), ("and", 0.8, 1.0), ("pay", 1.0, 1.2),
              ("twenty-five", 1.2, 1.8), ("dollars", 1.8, 2.2), ("today.", 2.2, 2.6)),
        2.8,
    )
    check_contract(out, words, 2.8)
    by_word = {w.word: w for w in out}
    assert (by_word["9"].start, by_word["9"].end) == (0.4, 0.8)
    assert (by_word["$25"].start, by_word["$25"].end) == (1.2, 2.2)
    assert by_word["today"].start == 2.2


def test_words_heard_as_numbers_match_too() -> None:
    words = input_words("nine lives")
    out = align_words(words, heard(("9", 0.1, 0.5), ("lives", 0.5, 0.9)), 1.0)
    assert [(w.start, w.end) for w in out] == [(0.1, 0.5), (0.5, 0.9)]


def test_punctuation_only_recognitions_and_case_do_not_matter() -> None:
    words = input_words("WELL, well.")
    out = align_words(words, heard(("Well", 0.0, 0.3), ("...", 0.3, 0.3), ("well", 0.4, 0.7)), 1.0)
    assert [(w.start, w.end) for w in out] == [(0.0, 0.3), (0.4, 0.7)]


def test_nothing_heard_spreads_words_over_the_duration() -> None:
    words = input_words("a longer word")
    out = align_words(words, [], 2.0)
    check_contract(out, words, 2.0)
    assert out[0].start == 0.0 and out[-1].end == 2.0 and out[1].end - out[1].start > out[0].end - out[0].start


def test_times_out_of_order_or_past_the_end_are_clamped() -> None:
    words = input_words("a b c")
    out = align_words(words, heard(("a", 0.5, 0.9), ("b", 0.4, 0.6), ("c", 1.8, 2.5)), 2.0)
    check_contract(out, words, 2.0)
    assert out[-1].end == 2.0


def test_repeated_words_are_matched_in_order() -> None:
    words = input_words("the cat saw the dog")
    out = align_words(words, heard(("the", 0, 0.2), ("cat", 0.2, 0.5), ("saw", 0.5, 0.8), ("the", 0.8, 0.9), ("dog", 0.9, 1.2)), 1.2)
    assert [w.start for w in out] == [0.0, 0.2, 0.5, 0.8, 0.9]


def test_timestamps_need_sse() -> None:
    base = {"model": "tts-1", "input": "hi", "voice": "alloy"}
    assert SpeechRequest.model_validate({**base, "stream_format": "sse", "timestamps": "word"}).timestamps == "word"
    assert SpeechRequest.model_validate(base).timestamps is None
    with pytest.raises(pydantic.ValidationError, match="stream_format"):
        SpeechRequest.model_validate({**base, "timestamps": "word"})
    with pytest.raises(pydantic.ValidationError):
        SpeechRequest.model_validate({**base, "stream_format": "sse", "timestamps": "character"})


def test_pcm_is_resampled_for_whisper() -> None:
    pcm = (np.sin(np.arange(24_000) / 10) * 10_000).astype("<i2").tobytes()  # 1 s at 24 kHz
    samples = pcm_to_whisper(pcm)
    assert samples.dtype == np.float32 and samples.size == 16_000
    assert 0.2 < float(np.abs(samples).max()) <= 1.0


class _FakeAligner:
    def __init__(self) -> None:
        self.calls = 0
        self.closed = False

    def ready(self) -> list[TimedWord]:
        self.calls += 1
        return [TimedWord("hi", 0.0, 0.5)] if self.calls == 1 else []

    async def finish(self) -> list[TimedWord]:
        return [TimedWord("there", 0.5, 0.9)]

    def close(self) -> None:
        self.closed = True


def test_sse_interleaves_the_timestamps_with_the_audio_before_done() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"\x00\x01"
        yield b"\x02\x03"

    aligner = _FakeAligner()

    async def collect() -> list[dict]:
        return [json.loads(frame[len(b"data: "):]) async for frame in stream.sse_events(chunks(), 2, aligner)]  # type: ignore[arg-type]

    events = asyncio.run(collect())
    assert [e["type"] for e in events] == [
        "speech.audio.delta", "speech.audio.timestamps", "speech.audio.delta", "speech.audio.timestamps", "speech.audio.done"
    ]
    assert events[1]["words"] == [{"word": "hi", "start": 0.0, "end": 0.5}]
    assert events[3]["words"] == [{"word": "there", "start": 0.5, "end": 0.9}]
    assert aligner.closed


def test_matched_prefix_ends_at_the_last_word_heard_as_written() -> None:
    words = input_words("one two three four five")
    assert matched_prefix(words, heard(("one", 0, 1), ("two", 1, 2), ("three", 2, 3), ("for", 3, 4))) == (3, 3)
    assert matched_prefix(words, heard(("one", 0, 1), ("too", 1, 2), ("three", 2, 3), ("for", 3, 4)), min_run=1) == (3, 3)
    # a lone word heard far ahead (noise heard as "five") does not carry the prefix there
    assert matched_prefix(words, heard(("one", 0, 1), ("two", 1, 2), ("five", 2, 3))) == (2, 2)
    assert matched_prefix(words, heard(("uh", 0, 1))) == (0, 0)
    assert matched_prefix(words, []) == (0, 0)


def test_a_stretch_is_cut_in_the_quietest_frame() -> None:
    loud = (np.sin(np.arange(24_000 * 2) / 5) * 8000).astype("<i2")
    loud[int(1.5 * 24_000) : int(1.5 * 24_000) + 480] = 0  # 20 ms of silence at 1.5 s
    cut = quiet_cut(loud.tobytes(), 0, loud.size * 2)
    assert abs(cut / 48_000 - 1.51) < 0.02 and cut % 2 == 0


class _ScriptedEngine:
    """Hears each stretch as the words scripted for it (times relative to the stretch)."""

    max_audio_s = None

    def __init__(self, script: list[list[tuple[str, float, float]]]) -> None:
        self.script = script
        self.heard_s: list[float] = []

    async def transcribe_async(self, samples: np.ndarray, **_: object) -> object:
        self.heard_s.append(samples.size / 16_000)
        words = [TimedWord(*w) for w in self.script[len(self.heard_s) - 1]]
        return type("T", (), {"words": words})()


def test_the_aligner_hands_out_words_per_stretch_then_the_rest() -> None:
    engine = _ScriptedEngine([[("hello", 0.1, 0.4), ("big", 0.45, 0.65)], [("wide", 0.1, 0.4), ("world", 0.5, 0.9)], []])
    aligner = WordAligner(engine, "Hello big wide world!", stretch_s=1.0)  # type: ignore[arg-type]
    tone = (np.sin(np.arange(24_000) / 5) * 8000).astype("<i2")
    tone[int(0.7 * 24_000) : int(0.7 * 24_000) + 480] = 0  # a pause at 0.7 s of each second
    second = tone.tobytes()

    async def run() -> list[list[TimedWord]]:
        async def chunks() -> AsyncIterator[bytes]:
            yield second
            await asyncio.sleep(0.01)
            yield second

        got = []
        async for _ in aligner.tap(chunks(), "pcm"):
            await asyncio.sleep(0.01)  # the stretch is heard meanwhile
            got.append(aligner.ready())
        got.append(await aligner.finish())
        return got

    batches = asyncio.run(run())
    words = [w for batch in batches for w in batch]
    assert [w.word for w in words] == ["Hello", "big", "wide", "world"]
    # Each stretch's words while the audio was still streaming; the tail heard at the end.
    assert [[w.word for w in batch] for batch in batches] == [["Hello", "big"], ["wide", "world"], []]
    assert engine.heard_s[:2] == [pytest.approx(0.71, abs=0.01), pytest.approx(1.0, abs=0.01)]  # cut in the pauses
    assert len(engine.heard_s) == 2  # every word was timed: the last 0.29 s need not be heard
    assert words[2].start == pytest.approx(0.71 + 0.1, abs=0.01)
    check_contract(words, ["Hello", "big", "wide", "world"], 2.0)
