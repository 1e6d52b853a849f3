"""Word timestamps for the words of the input text, from the words a recogniser heard in the audio
(forced alignment by transcription): pure functions, no I/O.

The input's words are its whitespace-separated tokens that hold a letter or a digit, stripped of the
punctuation around them ("dog," -> "dog"; "don't", "3.5" and "$25" stay whole). Both sides are normalised
(lower case, letters and digits only) and matched as sequences (difflib): a matched word takes the
time it was heard at; a stretch of input words heard differently ("9" heard as "nine", "$5" as
"five dollars") shares the time of what was heard there, in proportion to the words' lengths; input
words heard not at all get times interpolated between their neighbours; recognised words that are
not in the input are dropped. So the output lists exactly the input's words, once each, in order,
each `start <= end <= next start`, within `[0, duration]`.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import unicodedata
from typing import Sequence

_WORD = re.compile(r"[^\W_]", re.UNICODE)  # a letter or a digit, in any script
_NOT_ALNUM = re.compile(r"[\W_]+", re.UNICODE)


@dataclasses.dataclass(frozen=True)
class TimedWord:
    word: str
    start: float  # seconds from the start of the audio
    end: float


def input_words(text: str) -> list[str]:
    """The words of `text` that timestamps are given for, as written (surrounding punctuation off)."""
    return [_strip_punctuation(token) for token in text.split() if _WORD.search(token)]


def _strip_punctuation(token: str) -> str:
    """`token` without the punctuation (Unicode P*) around it; symbols such as $ and % stay."""
    start, end = 0, len(token)
    while start < end and unicodedata.category(token[start]).startswith("P"):
        start += 1
    while end > start and unicodedata.category(token[end - 1]).startswith("P"):
        end -= 1
    return token[start:end]


def normalise(word: str) -> str:
    return _NOT_ALNUM.sub("", word.casefold())


def align_words(words: Sequence[str], heard: Sequence[TimedWord], duration: float, *, start: float = 0.0) -> list[TimedWord]:
    """Times for each of `words` (the input's, in order) from `heard` (the recogniser's words with
    their times, in order), within `[start, duration]` seconds."""
    duration = max(start, float(duration))
    heard = _tidy(heard, start, duration)
    spans: list[tuple[float, float] | None] = [None] * len(words)
    matcher = difflib.SequenceMatcher(None, [normalise(w) for w in words], [normalise(h.word) for h in heard], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for offset in range(i2 - i1):
                spans[i1 + offset] = (heard[j1 + offset].start, heard[j1 + offset].end)
        elif tag == "replace":
            _share(words, spans, i1, i2, heard[j1].start, heard[j2 - 1].end)
        # "delete": input words not heard, filled in below; "insert": heard words not in the input
    _interpolate(words, spans, start, duration)
    return _monotonic(words, spans, start, duration)


def matched_prefix(words: Sequence[str], heard: Sequence[TimedWord], *, min_run: int = 2) -> tuple[int, int]:
    """How many of `words` and of `heard` lead up to, and include, the last run of at least `min_run`
    words heard as written: a prefix whose times later audio cannot change (0, 0 when there is none).
    A lone common word heard in noise ("the") does not carry the prefix far ahead."""
    normal = [normalise(h.word) for h in heard]
    matcher = difflib.SequenceMatcher(None, [normalise(w) for w in words], normal, autojunk=False)
    blocks = [block for block in matcher.get_matching_blocks() if block.size >= max(1, min_run)]
    if not blocks:
        return 0, 0
    last = blocks[-1]
    return last.a + last.size, last.b + last.size


def _tidy(heard: Sequence[TimedWord], floor: float, duration: float) -> list[TimedWord]:
    """The recognised words with a letter or digit, their times clamped into the audio and made monotonic."""
    tidy: list[TimedWord] = []
    for word in heard:
        if not normalise(word.word):
            continue
        start = min(max(word.start, floor), duration)
        end = min(max(word.end, start), duration)
        tidy.append(TimedWord(word.word, start, end))
        floor = start
    return tidy


def _share(words: Sequence[str], spans: list[tuple[float, float] | None], i1: int, i2: int, start: float, end: float) -> None:
    """Split [start, end] among words[i1:i2] in proportion to their lengths."""
    weights = [max(1, len(normalise(w))) for w in words[i1:i2]]
    total = sum(weights)
    at = start
    for index, weight in zip(range(i1, i2), weights):
        step = (end - start) * weight / total
        spans[index] = (at, at + step)
        at += step


def _interpolate(words: Sequence[str], spans: list[tuple[float, float] | None], start: float, duration: float) -> None:
    """Fill each run of unknown spans between the end of the known word before it (or `start`) and the
    start of the known word after it (or the end of the audio)."""
    index = 0
    while index < len(spans):
        if spans[index] is not None:
            index += 1
            continue
        run_end = index
        while run_end < len(spans) and spans[run_end] is None:
            run_end += 1
        before = spans[index - 1][1] if index > 0 and spans[index - 1] is not None else start  # type: ignore[index]
        after_span = spans[run_end] if run_end < len(spans) else None
        after = after_span[0] if after_span is not None else duration
        _share(words, spans, index, run_end, before, max(before, after))
        index = run_end


def _monotonic(words: Sequence[str], spans: list[tuple[float, float] | None], floor: float, duration: float) -> list[TimedWord]:
    out: list[TimedWord] = []
    for word, span in zip(words, spans):
        assert span is not None
        start = min(max(span[0], floor), duration)
        end = min(max(span[1], start), duration)
        out.append(TimedWord(word, round(start, 3), round(end, 3)))
        floor = end
    return out
