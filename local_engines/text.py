"""Text front-end for the local engines: normalise text for speech and cut it into pieces.

The pieces are synthesised one after another and streamed, so the first one is kept short
(fast first audio) and later ones grow towards whole sentences. `Chunk.pause_after_s` is the
silence to put between a piece's audio and the next one's.

Every piece is bounded whatever the script or spacing: sizes are counted in budget characters
(`budget_chars`), where a CJK character, a symbol or emoji and a private-use character count
`HEAVY_WEIGHT` (a phonemiser turns each into several phonemes, "Chinese letter" for a kanji
read by an English voice), and a piece never exceeds `max_chunk_chars` of them: text without
spaces (CJK) is cut at its own punctuation, else between characters.

`normalize` always cleans up Unicode, quotes, dashes and whitespace; for English it also
spells out numbers, currency, times and common abbreviations (with `num2words`), whose
periods would otherwise be taken for sentence ends. It never raises, whatever the string.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import unicodedata
from collections.abc import Iterator

from num2words import num2words

SENTENCE_PAUSE_S = 0.25
CLAUSE_PAUSE_S = 0.1
WORD_PAUSE_S = 0.02
DEFAULT_GROWTH = 2.5  # each piece may be this much larger than the one before (up to the maximum)
ORPHAN_CHARS = 10  # a sentence's tail this short is not a piece of its own (but of the one before)


@dataclasses.dataclass(frozen=True)
class Chunk:
    text: str  # normalised, stripped, never empty, contains a letter or digit
    pause_after_s: float  # 0.0 for the last piece


# --- normalisation, every language ---------------------------------------------------------

# Control characters other than whitespace (which is collapsed instead), invisible format
# characters that only get in the way (soft hyphen, zero-width space, BOM) and lone surrogates.
_CONTROL = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\u00ad\u200b\ufeff\ud800-\udfff]")
_QUOTES = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"'}
)
_DASH = re.compile(r"(?: ?[\u2013\u2014\u2015])+ ?")
_SPACE = re.compile(r"\s+")


def normalize(text: str, language: str = "en") -> str:
    """Clean `text` up for speech; for English (`language` starting with "en") also expand it.

    Never raises for a str: whatever the client sends is cleaned or passed through, never an
    engine fault."""
    text = _CONTROL.sub("", text)
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    text = _DASH.sub(" \u2014 ", _SPACE.sub(" ", text)).strip()
    if language.lower().startswith("en"):
        text = _SPACE.sub(" ", _expand_english(text)).strip()
    return text


def speakable(text: str, language: str = "en") -> bool:
    """Whether `text` has anything to say: a letter or digit once normalised. Text of only
    punctuation, symbols, emoji or private-use characters has not (`split` yields nothing)."""
    return has_speech(normalize(text, language))


def has_speech(normalized: str) -> bool:
    """`speakable` for text `normalize` has already been through."""
    return _ALNUM.search(normalized) is not None


# Characters a phonemiser turns into several phonemes each: CJK ideographs, kana and hangul
# (about 2 to 6 in their own language; an English voice reads a kanji as "Chinese letter"),
# symbols and emoji ("grinning face") and private use. Each counts HEAVY_WEIGHT budget
# characters; CJK punctuation (U+3000-U+303F) counts one. The engines bound the phonemes per
# inference themselves: this keeps a piece of CJK about as long, spoken, as one of English.
HEAVY_WEIGHT = 3
_HEAVY = re.compile(
    "[\u1100-\u11ff\u2190-\u2bff\u2e80-\u2fff\u3040-\ua4cf\ua960-\ua97f\uac00-\ud7ff\ue000-\uf8ff\uf900-\ufaff"
    "\ufe30-\ufe4f\uff66-\uffdc\U0001f000-\U0001faff\U00020000-\U0003ffff\U000f0000-\U0010ffff]"
)


def budget_chars(text: str) -> int:
    """How many characters `text` counts for in a piece's size (and a runner's time budget):
    its length, with each heavy character (CJK, symbol, emoji, private use) counting HEAVY_WEIGHT."""
    return len(text) + (HEAVY_WEIGHT - 1) * sum(1 for _ in _HEAVY.finditer(text))


# --- normalisation, English ----------------------------------------------------------------

# ASCII-only case folding: under Unicode rules "ı.e." would match "i.e" and miss the table.
_ABBREVIATION = re.compile(r"(?<![\w.])(Mrs|Mr|Ms|Dr|Prof|St|Jr|Sr|(?ai:vs|etc|approx|e\.g|i\.e))\.")
_TITLES = {"Mr": "Mister", "Mrs": "Missus", "Ms": "Miz", "Dr": "Doctor", "Prof": "Professor"}
_INLINE = {"vs": "versus", "e.g": "for example", "i.e": "that is", "approx": "approximately"}
# These often end a sentence, and their period then does both jobs.
_SENTENCE_FINAL = {"jr": "Junior", "sr": "Senior", "etc": "et cetera"}
_AMPM = re.compile(r"(?<=\d) ?([AaPp])\.? ?[Mm]\b(\.)?")
_NUMBER_SIGN = re.compile(r"(?:(?<![\w.])[Nn]o\. ?|#)(?=\d)")
_AND = re.compile(r"&")
_AT = re.compile(r"@")
_PLUS = re.compile(r"(?<=\d) ?\+ ?(?=\d)")

# Possessive, and starting only where a digit run starts, so that a long run of digits (or of
# thousands groups) that turns out not to match costs its length once, not its length squared.
_INT = r"(?<!\d)(?P<int>(?<!\d,)\d{1,3}(?:,\d{3}(?!\d))++|\d++)"
_FRAC = r"(?:\.(?P<frac>\d++))?"
# A minus only when it cannot be a hyphen ("COVID-19", "5-3").
_SIGN = r"(?:(?<![\w.,])(?P<sign>[-\u2212]))?"
_CURRENCY_BEFORE = re.compile(
    _SIGN + r"(?P<sym>[$£€]) ?" + _INT + _FRAC + r"(?: (?P<scale>thousand|million|billion|trillion)\b)?"
)
_CURRENCY_AFTER = re.compile(_SIGN + _INT + _FRAC + r" ?(?P<sym>[$£€])")
_PERCENT = re.compile(_SIGN + _INT + _FRAC + r" ?%")
_PERCENT_SIGN = re.compile(r"%")
_TIME = re.compile(r"(?<![\d:.,])(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)(?!\d|:\d|[.,]\d)")
_ORDINAL = re.compile(r"(?<![\d.,])" + _INT + r"(?P<suffix>st|nd|rd|th|ST|ND|RD|TH)\b")
_NUMBER = re.compile(_SIGN + _INT + _FRAC + r"(?P<plural>s\b)?")
# "March 14" is said "March fourteenth" ("May" only where it cannot be the verb: "May 5.").
_MONTHS = r"(?:January|February|March|April|May(?= \d{1,2}(?:st|nd|rd|th)?(?:[,.;!?]|$))|June|July|August|September|October|November|December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)\.?"
_DAY = r"(?P<day>[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?(?![\d.,:]\d|\w|%)"
_DATE_MONTH_DAY = re.compile(r"\b(?P<month>" + _MONTHS + r") " + _DAY)

_CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
}
_MAX_CARDINAL_DIGITS = 15  # longer numbers (card numbers, ids) are read digit by digit
_DIGIT_WORDS = tuple(num2words(i) for i in range(10))


def _expand_english(text: str) -> str:
    text = _ABBREVIATION.sub(_abbreviation, text)
    text = _AMPM.sub(_ampm, text)
    text = _NUMBER_SIGN.sub("number ", text)
    text = _AND.sub(" and ", text)
    text = _AT.sub(" at ", text)
    text = _PLUS.sub(" plus ", text)
    text = _CURRENCY_BEFORE.sub(_currency, text)
    text = _CURRENCY_AFTER.sub(_currency, text)
    text = _PERCENT.sub(_percent, text)
    text = _PERCENT_SIGN.sub(" percent ", text)
    text = _TIME.sub(_time, text)
    text = _DATE_MONTH_DAY.sub(_date, text)
    text = _ORDINAL.sub(_ordinal, text)
    return _NUMBER.sub(_number, text)


def _ends_sentence(m: re.Match[str]) -> bool:
    """Whether the abbreviation's period is probably also a full stop: text ends, or a capital follows."""
    s, end = m.string, m.end()
    return end == len(s) or (s[end] == " " and s[end + 1 : end + 2].isupper())


def _abbreviation(m: re.Match[str]) -> str:
    word = m.group(1)
    if word in _TITLES:
        return _TITLES[word]
    if word == "St":
        s, end = m.string, m.end()
        if s[end : end + 1] == " " and s[end + 1 : end + 2].isupper():
            return "Saint"
        return "Street." if end == len(s) else "Street"
    key = word.lower()
    if key in _SENTENCE_FINAL:
        return _SENTENCE_FINAL[key] + "." if _ends_sentence(m) else _SENTENCE_FINAL[key]
    return _INLINE.get(key, m.group(0))


def _ampm(m: re.Match[str]) -> str:
    spoken = " " + m.group(1).lower() + " m"
    return spoken + "." if m.group(2) and _ends_sentence(m) else spoken


def _pad(m: re.Match[str], words: str) -> str:
    """Keep spelled-out numbers apart from letters glued to them ("3D", "mp3")."""
    s, start, end = m.string, m.start(), m.end()
    before = " " if start > 0 and s[start - 1].isalnum() else ""
    after = " " if end < len(s) and s[end].isalnum() else ""
    return before + words + after


@functools.lru_cache(maxsize=4096)
def _cardinal(n: int) -> str:
    return num2words(n)


def _integer_words(digits: str) -> str:
    digits = digits.replace(",", "")
    if len(digits) > _MAX_CARDINAL_DIGITS or (len(digits) > 1 and digits[0] == "0"):
        return " ".join(_DIGIT_WORDS[int(d)] for d in digits)
    return _cardinal(int(digits))


def _number_words(m: re.Match[str]) -> str:
    words = _integer_words(m.group("int"))
    if m.group("frac"):
        words += " point " + " ".join(_DIGIT_WORDS[int(d)] for d in m.group("frac"))
    return "minus " + words if m.group("sign") else words


def _currency(m: re.Match[str]) -> str:
    one, many, sub_one, sub_many = _CURRENCIES[m.group("sym")]
    scale = m.groupdict().get("scale")
    frac = m.group("frac")
    if scale:
        words = f"{_number_words(m)} {scale} {many}"
    elif frac and len(frac) > 2:
        words = f"{_number_words(m)} {many}"
    else:
        whole = int(m.group("int").replace(",", ""))
        cents = int(frac.ljust(2, "0")) if frac else 0
        parts = []
        if whole or not cents:
            parts.append(f"{_integer_words(m.group('int'))} {one if whole == 1 else many}")
        if cents:
            parts.append(f"{_cardinal(cents)} {sub_one if cents == 1 else sub_many}")
        words = ", ".join(parts)
        if m.group("sign"):
            words = "minus " + words
    return _pad(m, words)


def _percent(m: re.Match[str]) -> str:
    return _pad(m, _number_words(m) + " percent")


def _time(m: re.Match[str]) -> str:
    hours, minutes = int(m.group("h")), int(m.group("m"))
    words = _cardinal(hours)
    if minutes >= 10:
        words += " " + _cardinal(minutes)
    elif minutes:
        words += " oh " + _cardinal(minutes)
    elif not m.string.startswith((" a m", " p m"), m.end()):
        words += " o'clock"
    return _pad(m, words)


@functools.lru_cache(maxsize=1024)
def _ordinal_words(n: int) -> str:
    return num2words(n, to="ordinal")


def _date(m: re.Match[str]) -> str:
    return f"{m.group('month')} {_ordinal_words(int(m.group('day')))}"


def _ordinal(m: re.Match[str]) -> str:
    digits = m.group("int").replace(",", "")
    if len(digits) > _MAX_CARDINAL_DIGITS:
        return _pad(m, _integer_words(digits) + " " + m.group("suffix"))
    return _pad(m, _ordinal_words(int(digits)))


@functools.lru_cache(maxsize=1024)
def _year_words(n: int) -> str:
    return num2words(n, to="year")


def _plural(words: str) -> str:
    if words.endswith("y"):
        return words[:-1] + "ies"
    return words + "es" if words.endswith(("x", "s")) else words + "s"


def _number(m: re.Match[str]) -> str:
    digits = m.group("int")
    s, start, end = m.string, m.start(), m.end()
    is_year = (
        len(digits) == 4
        and not m.group("sign")
        and not m.group("frac")
        and 1100 <= int(digits) <= 2099
        and not (start > 0 and s[start - 1].isalnum())
        and not (end < len(s) and s[end].isalnum())
    )
    words = _year_words(int(digits)) if is_year else _number_words(m)
    if m.group("plural"):
        words = _plural(words)  # "the 1990s", "in her 80s"
    return _pad(m, words)


# --- splitting -----------------------------------------------------------------------------

_TERMINATOR = re.compile(r"[.!?\u2026\u3002\uff01\uff1f]+[\"')\]}\u300d\u300f\u3011\u300b\u3009]*")
_CJK_TERMINATORS = frozenset("\u3002\uff01\uff1f")
_CLAUSE = re.compile(r"[,;:\u2014\u2013\u3001]")
_CLAUSE_MARKS = frozenset(",;:\u2014\u2013\u3001")
_CLOSERS = "\"')]}\u300d\u300f\u3011\u300b\u3009"
_CJK = re.compile(r"[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f]")
_ALNUM = re.compile(r"[^\W_]")


def split(
    text: str, *, first_chunk_chars: int, max_chunk_chars: int, growth: float = DEFAULT_GROWTH, language: str = "en"
) -> Iterator[Chunk]:
    """Normalise `text` and yield it as pieces to synthesise in order, lazily.

    Sizes are in budget characters (`budget_chars`: a CJK character, symbol or emoji counts
    HEAVY_WEIGHT). Piece k is at most min(max_chunk_chars, first_chunk_chars * growth**k) of
    them, unless it is a single word, and never more than max_chunk_chars (nor, as characters,
    ever longer than that). A piece never spans two sentences; it is cut at the last clause
    mark that fits, else between words; a word or a run of text without spaces (CJK) too long
    for max_chunk_chars is cut between characters, where possible not inside a combining
    sequence. Each piece has a letter or digit: a run of punctuation or symbols with no letter
    or digit that cannot share a piece with one is dropped (there is nothing in it to speak).
    """
    # Normalised here, not on the first next(), so that bad input fails at the call.
    return cut(normalize(text, language), first_chunk_chars=first_chunk_chars, max_chunk_chars=max_chunk_chars, growth=growth)


def cut(normalized: str, *, first_chunk_chars: int, max_chunk_chars: int, growth: float = DEFAULT_GROWTH) -> Iterator[Chunk]:
    """`split` for text `normalize` has already been through (normalised once, used thrice)."""
    if first_chunk_chars < 1 or max_chunk_chars < 1:
        raise ValueError("first_chunk_chars and max_chunk_chars must be at least 1")
    if not growth >= 1.0:
        raise ValueError("growth must be at least 1.0")
    return _chunks(normalized, first_chunk_chars, max_chunk_chars, growth)


def _chunks(text: str, first: int, most: int, growth: float) -> Iterator[Chunk]:
    limits = _limits(first, most, growth)
    # One piece is held back: only the next one tells whether it is the last.
    held: tuple[str, float] | None = None
    for start, end in _sentences(text):
        for piece in _cut_sentence(text, start, end, limits, most, first):
            if held is not None:
                yield Chunk(*held)
            held = piece
    if held is not None:
        yield Chunk(held[0], 0.0)


def _limits(first: int, most: int, growth: float) -> Iterator[int]:
    k = 0
    while True:
        try:
            value = first * growth**k
        except OverflowError:
            break
        if value >= most:
            break
        yield int(value)
        k += 1
    while True:
        yield most


def _boundaries(text: str) -> Iterator[int]:
    """Offsets just past each sentence end (terminators plus closing quotes or brackets)."""
    n = len(text)
    for m in _TERMINATOR.finditer(text):
        start, end = m.start(), m.end()
        if end < n and text[end] != " ":
            # Glued to what follows ("3.14", "example.com"): an end only in CJK text.
            if not (_CJK_TERMINATORS.intersection(m.group()) or _CJK.match(text, end)):
                continue
        if (
            end == start + 1
            and text[start] == "."
            and start >= 1
            and text[start - 1].isupper()
            and (start == 1 or not text[start - 2].isalpha())
        ):
            continue  # an initial: "J. R. R. Tolkien"
        yield end


def _sentences(text: str) -> Iterator[tuple[int, int]]:
    """Spans of sentences that contain a letter or digit.

    A punctuation-only "sentence" ("..." between two others) joins the one before it, or the
    one after it at the very start; text without any letter or digit gives nothing.
    """
    n = len(text)
    start = searched = 0  # text[start:searched] is known to hold no letter or digit
    held: tuple[int, int] | None = None
    for end in _with_end(_boundaries(text), n):
        if start >= end:
            continue
        if _ALNUM.search(text, searched, end) is None:
            if held is None:
                searched = end
                continue  # keep `start`: the punctuation leads the next sentence
            held = (held[0], end)
        else:
            if held is not None:
                yield held
            held = (start, end)
        start = searched = end + 1 if end < n and text[end] == " " else end
    if held is not None:
        yield held


def _with_end(boundaries: Iterator[int], n: int) -> Iterator[int]:
    last = 0
    for end in boundaries:
        last = end
        yield end
    if last < n:
        yield n


def _cut_sentence(
    text: str, start: int, end: int, limits: Iterator[int], most: int, first_limit: int = 0
) -> Iterator[tuple[str, float]]:
    """Cut one sentence span into pieces, taking one limit per piece; each piece and each
    remainder keeps at least one letter or digit, and no piece is over `most` budget characters.
    A piece after the first (whose limit is over `first_limit`) takes the sentence's last
    ORPHAN_CHARS too rather than leave them alone ("... the blue" + "car?")."""
    last = end - 1
    while not text[last].isalnum():
        last -= 1
    pos = start
    while True:
        limit = next(limits)
        first_match = _ALNUM.search(text, pos, end)
        assert first_match is not None
        first = first_match.start()
        bound = _reach(text, pos, end, limit)
        if limit > first_limit and bound < end and _reach(text, pos, end, min(most, limit + ORPHAN_CHARS)) >= end:
            bound = end
        if bound <= first:
            # Leading punctuation or symbols longer than the limit: they go with the first word,
            # as a word longer than the limit would; with nothing at all if even `most` is too short.
            word_end = text.find(" ", first, end)
            bound = min(_reach(text, pos, end, most), end if word_end == -1 else word_end)
            if bound <= first:
                pos = first
                bound = _reach(text, pos, end, limit)
        if bound >= end:
            yield text[pos:end], SENTENCE_PAUSE_S
            return
        cut = _clause_cut(text, first, min(bound, last))
        pause = CLAUSE_PAUSE_S
        if cut is None:
            most_bound = _reach(text, pos, end, most)
            cut, pause = _word_cut(text, pos, first, last, bound, most_bound)
            if cut is None:
                if most_bound >= end and not _HEAVY.search(text, pos, end):  # the last word, longer than the limit
                    yield text[pos:end], SENTENCE_PAUSE_S
                    return
                if first == last:
                    # One letter or digit left, then punctuation or symbols: as much as `most` allows.
                    stop = end if most_bound >= end else _char_cut(text, first, most_bound)
                    yield text[pos:stop].rstrip(" "), SENTENCE_PAUSE_S
                    return
                cut, pause = _char_cut(text, first, min(bound, last)), WORD_PAUSE_S
        yield text[pos:cut], pause
        pos = cut + 1 if text[cut] == " " else cut


def _reach(text: str, pos: int, end: int, limit: int) -> int:
    """The furthest offset (at most `end`) such that text[pos:offset] costs at most `limit`
    budget characters; at least pos + 1, so that a piece always holds one character."""
    budget, i = limit, pos
    while True:
        m = _HEAVY.search(text, i, min(end, i + budget))
        if m is None:
            return max(min(end, i + budget), pos + 1)
        heavy = m.start()
        budget -= heavy - i
        if budget < HEAVY_WEIGHT:
            return max(heavy, pos + 1)
        budget -= HEAVY_WEIGHT
        i = heavy + 1


def _clause_cut(text: str, first: int, bound: int) -> int | None:
    """The offset just past the last clause mark before `bound` that follows `first`."""
    cut = None
    for m in _CLAUSE.finditer(text, first + 1, bound):
        after = m.end()
        if m.group() == "\u3001" or text[after] == " " or _CJK.match(text, after):
            cut = after
    return cut


# Words that lean on the next one: a piece ending on one of them is read with the wrong
# stress and its last word is often lost ("the keys to the | blue car"), so a cut between
# words moves back before them where it can. Likewise no cut inside a spoken number.
_LEANERS = frozenset(
    "a an the to of in on at for from with by and or but nor as into onto than about over under after before "
    "my your his her its our their this that these those".split()
)
_LEAN_BACK_WORDS = 4  # how far back a cut may move (bounded: the cut stays linear in the text)
_NUMBER_WORD = re.compile(
    r"(?:zero|oh|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|"
    r"seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand|million|"
    r"billion)(?:-[a-z]+)?(?:th|st|nd|rd)?",
    re.IGNORECASE,
)


def _word_cut(text: str, pos: int, first: int, last: int, bound: int, most_bound: int) -> tuple[int | None, float]:
    """The last space that keeps the piece within `bound`, moved back past words that lean on
    the next; else the end of the first word, which may be longer but stays within `most_bound`
    and has no heavy (CJK) character; else None."""
    space = text.rfind(" ", first + 1, min(bound, last - 1) + 1)
    if space != -1:
        space = _natural_space(text, first, space)
    if space == -1:
        space = text.find(" ", first + 1, min(last, most_bound + 1))
        if space == -1 or _HEAVY.search(text, pos, space):  # CJK has no words to keep whole
            return None, SENTENCE_PAUSE_S
    piece_end = text[pos:space].rstrip(_CLOSERS)
    return space, CLAUSE_PAUSE_S if piece_end and piece_end[-1] in _CLAUSE_MARKS else WORD_PAUSE_S


def _natural_space(text: str, first: int, space: int) -> int:
    """`space`, or the nearest space before it (after the piece's first word) where the word
    before does not lean on the next and no spoken number is split."""
    candidate = space
    for _ in range(_LEAN_BACK_WORDS):
        if candidate <= first:
            break
        before = text[text.rfind(" ", first, candidate) + 1 : candidate].strip(_CLOSERS + "\"'")
        after_end = text.find(" ", candidate + 1)
        after = text[candidate + 1 : after_end if after_end != -1 else len(text)]
        splits_number = _NUMBER_WORD.fullmatch(before) is not None and _NUMBER_WORD.match(after) is not None
        if before and before[-1] in _CLAUSE_MARKS:
            return candidate
        if before.lower() not in _LEANERS and not splits_number:
            return candidate
        candidate = text.rfind(" ", first + 1, candidate)
    return space


# Zero-width joiner, variation selectors, emoji skin tones: they belong to the character before.
_JOINERS = re.compile("[\u200c\u200d\ufe00-\ufe0f\U0001f3fb-\U0001f3ff\U000e0020-\U000e007f\U000e0100-\U000e01ef]")


def _char_cut(text: str, first: int, bound: int) -> int:
    """Where to cut a run without spaces: at `bound`, moved back (not past the first letter) so
    as not to split a combining sequence, a joined emoji or a hangul syllable in jamo."""
    cut = bound
    while cut > first + 1 and _joined(text, cut):
        cut -= 1
    return cut if not _joined(text, cut) else bound


def _joined(text: str, i: int) -> bool:
    """Whether text[i] belongs to the same user-perceived character as text[i - 1]."""
    c, before = text[i], text[i - 1]
    return (
        unicodedata.category(c) in ("Mn", "Mc", "Me")
        or _JOINERS.match(c) is not None
        or before == "\u200d"
        or ("\u1100" <= before <= "\u115f" and "\u1160" <= c <= "\u11ff")
        or ("\u1160" <= before <= "\u11a7" and "\u11a8" <= c <= "\u11ff")
    )
