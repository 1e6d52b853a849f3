"""The local engines' text front-end: normalisation and the first-piece-small splitting."""

from __future__ import annotations

import dataclasses
import re
import time
import tracemalloc
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from num2words import num2words

from voxrouter.local_engines.text import (
    CLAUSE_PAUSE_S,
    HEAVY_WEIGHT,
    ORPHAN_CHARS,
    SENTENCE_PAUSE_S,
    WORD_PAUSE_S,
    Chunk,
    budget_chars,
    normalize,
    speakable,
    split,
)


def pieces(text: str, first: int = 20, most: int = 300, growth: float = 2.5, language: str = "en") -> list[Chunk]:
    return list(split(text, first_chunk_chars=first, max_chunk_chars=most, growth=growth, language=language))


def texts(text: str, **kwargs) -> list[str]:
    return [c.text for c in pieces(text, **kwargs)]


def limit(k: int, first: int, most: int, growth: float) -> int:
    try:
        return min(most, int(first * growth**k))
    except OverflowError:
        return most


def longest_unspeakable_run(text: str) -> int:
    """The budget characters of the longest run of characters that are not letters or digits."""
    return max((budget_chars(run) for run in re.findall(r"(?:[\W_])+", text)), default=0)


def alnum_tokens(text: str) -> int:
    return sum(1 for token in text.split() if any(c.isalnum() for c in token))


# --- normalisation, every language ---------------------------------------------------------


@pytest.mark.parametrize("language", ["en", "ja", "de"])
def test_nfkc_quotes_whitespace_and_controls(language):
    assert normalize("\u201cHi\u201d \u2018there\u2019 \ufb01ne", language) == "\"Hi\" 'there' fine"
    assert normalize("  a \n\n\t b\r\nc\u3000d  ", language) == "a b c d"
    assert normalize("a\x00b\x07c\x1bd\u200be", language) == "abcde"
    assert normalize("", language) == ""
    assert normalize(" \n\t ", language) == ""


@pytest.mark.parametrize("language", ["en", "ja"])
def test_dashes_become_a_spaced_em_dash(language):
    assert normalize("wait\u2014what", language) == "wait \u2014 what"
    assert normalize("wait \u2013 what", language) == "wait \u2014 what"


def test_no_english_expansion_for_other_languages():
    text = "Dr. Smith paid $5.50 (50%) on 1st May 1999 at 10:30 & left."
    assert normalize(text, "ja") == text
    assert normalize(text, "de-DE") == text
    assert "Doctor" in normalize(text, "en-US")
    assert "fifty percent" in normalize(text, "en-GB")


def test_fullwidth_forms_are_folded():
    assert normalize("\uff21\uff11\uff01", "ja") == "A1!"


# --- normalisation, English ----------------------------------------------------------------


def test_integers_use_num2words():
    assert normalize("I have 42 apples") == "I have forty-two apples"
    assert normalize("1,234 people") == f"{num2words(1234)} people"
    assert normalize("0") == "zero"


def test_negative_numbers_and_hyphens():
    assert normalize("It was -5 degrees") == "It was minus five degrees"
    assert normalize("(-3)") == "(minus three)"
    assert normalize("COVID-19") == "COVID-nineteen"  # a hyphen, not a sign


def test_decimals():
    assert normalize("pi is 3.14") == "pi is three point one four"
    assert normalize("-0.5") == "minus zero point five"
    assert "point one zero" in normalize("2.10")


@pytest.mark.parametrize(
    ("text", "word"),
    [("1st", "first"), ("22nd", "twenty-second"), ("3rd", "third"), ("4th", "fourth"), ("101st", "one hundred and first")],
)
def test_ordinals(text, word):
    assert normalize(f"the {text} time") == f"the {word} time"


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("$5", "five dollars"),
        ("$5.50", "five dollars, fifty cents"),
        ("$1", "one dollar"),
        ("$0.99", "ninety-nine cents"),
        ("$0.01", "one cent"),
        ("$5.00", "five dollars"),
        ("$1,000", "one thousand dollars"),
        ("$2.5 million", "two point five million dollars"),
        ("-$3", "minus three dollars"),
        ("£1", "one pound"),
        ("£2.50", "two pounds, fifty pence"),
        ("€1", "one euro"),
        ("€3", "three euros"),
        ("5\u20ac", "five euros"),
    ],
)
def test_currency(text, spoken):
    assert normalize(f"It costs {text} now") == f"It costs {spoken} now"


def test_percentages():
    assert "fifty percent" in normalize("50%")
    assert normalize("100 % sure") == "one hundred percent sure"
    assert normalize("12.5%") == "twelve point five percent"
    assert normalize("the % sign") == "the percent sign"


def test_years():
    assert normalize("in 1999") == "in nineteen ninety-nine"
    assert normalize("in 2024.") == "in twenty twenty-four."
    assert normalize("since 1100") == f"since {num2words(1100, to='year')}"
    assert normalize("in the 1990s") == "in the nineteen nineties"
    # Outside 1100-2099, or not standing alone: plain numbers.
    assert normalize("1099 items") == f"{num2words(1099)} items"
    assert normalize("2100 items") == f"{num2words(2100)} items"
    assert normalize("1,999 items") == f"{num2words(1999)} items"
    assert normalize("19.99 items") == "nineteen point nine nine items"


def test_clock_times():
    assert normalize("at 10:30") == "at ten thirty"
    assert normalize("at 9:05") == "at nine oh five"
    assert normalize("at 7:00") == "at seven o'clock"
    assert normalize("at 7:00 p.m. sharp") == "at seven p m sharp"
    assert normalize("at 5pm") == "at five p m"
    assert normalize("the ratio 3:2") == "the ratio three:two"


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("Mr. Smith", "Mister Smith"),
        ("Mrs. Smith", "Missus Smith"),
        ("Ms. Smith", "Miz Smith"),
        ("Dr. Smith", "Doctor Smith"),
        ("St. Louis", "Saint Louis"),
        ("Main St. and", "Main Street and"),
        ("John Smith Jr. and", "John Smith Junior and"),
        ("John Smith Sr. and", "John Smith Senior and"),
        ("cats vs. dogs", "cats versus dogs"),
        ("cats, dogs, etc. and", "cats, dogs, et cetera and"),
        ("fruit, e.g. apples", "fruit, for example apples"),
        ("fruit, i.e. apples", "fruit, that is apples"),
        ("approx. 5 km", "approximately five km"),
        ("No. 5 is", "number five is"),
        ("A & B", "A and B"),
        ("2+2", "two plus two"),
        ("me@example.com", "me at example.com"),
    ],
)
def test_abbreviations_and_symbols(text, spoken):
    assert normalize(text) == spoken


def test_abbreviation_period_kept_where_it_also_ends_the_sentence():
    assert normalize("Apples, pears, etc. Then more.") == "Apples, pears, et cetera. Then more."
    assert normalize("Apples, pears, etc.") == "Apples, pears, et cetera."
    assert normalize("The answer is no. Then") == "The answer is no. Then"  # "no." only before a digit


def test_digits_glued_to_letters_are_kept_apart():
    assert normalize("3D mp3") == "three D mp three"
    assert normalize("code 007") == "code zero zero seven"


def test_very_long_numbers_are_read_digit_by_digit():
    digits = "1234567890" * 10
    spoken = normalize(digits)
    assert spoken.split()[:3] == ["one", "two", "three"]
    assert len(spoken.split()) == 100


_TOKENS = st.sampled_from(
    [" ", "  ", "\n", "a", "Word", "x", "5", "42", "1,234", "3.14", "-", "-7", "$", "$5", "$5.50", "£", "€", "%", "50%", "&", "@", "+",
     "1999", "2024", "1990s", "80s", "10:30", "9:05", ":", "1st", "22nd", "th", "Dr.", "St.", "No.", "etc.", "e.g.", "p.m.", "am",
     ".", ",", "!", "?", "\u2014", "\u2013", "\u201c", "\u2019", "(", ")", "#", "\x00", "\u00bd", "\u0663", "\uff15", "12345678901234567890"]
)  # fmt: skip
_TEXT = st.lists(_TOKENS, max_size=40).map("".join) | st.text(max_size=60)


@given(_TEXT)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_normalize_english_is_clean_and_spells_out_every_digit(text):
    out = normalize(text)
    assert out == out.strip()
    assert "  " not in out
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2018\u2019\u201c\u201d\u2013]", out)
    assert not re.search(r"\d", out), out


@given(_TEXT)
@settings(max_examples=200, deadline=None)
def test_normalize_other_languages_keeps_content(text):
    out = normalize(text, "ja")
    assert out == out.strip()
    assert "  " not in out
    assert "Dr." not in text or "Dr." in out


def test_normalize_is_linear_on_long_text():
    block = "Dr. Smith paid $5.50 for 3 apples at 10:30 on 1st May 1999, i.e. 50% off! " * 10
    small, large = block * 2, block * 80  # ~1,500 and ~60,000 characters
    normalize(small)
    start = time.perf_counter()
    normalize(small)
    small_s = time.perf_counter() - start
    start = time.perf_counter()
    out = normalize(large)
    large_s = time.perf_counter() - start
    assert "Doctor Smith" in out and not re.search(r"\d", out)
    assert large_s < 5.0
    assert large_s < max(small_s, 5e-3) * 40 * 8  # 40x the text: linear, with room for a loaded machine


@pytest.mark.parametrize(
    "text",
    [
        "7" * 50_000,  # one digit run, read digit by digit
        "1" + ",234" * 12_000 + "5",  # thousands groups that end badly
        "3.1" + "4" * 50_000,
        " \t" * 25_000 + "x",
        "\u2014" * 50_000,
        ". " * 25_000 + "Hello.",
        "x " * 50_000,
    ],
    ids=["digits", "thousands", "decimal", "whitespace", "dashes", "dots", "words"],
)
@pytest.mark.timeout(30)
def test_pathological_inputs_stay_fast(text):
    start = time.perf_counter()
    for language in ("en", "ja"):
        for _ in split(text, first_chunk_chars=20, max_chunk_chars=300, language=language):
            pass
    assert time.perf_counter() - start < 5.0  # each takes well under 0.5 s; quadratic would take minutes


# --- splitting -----------------------------------------------------------------------------


def test_first_piece_ends_at_a_clause_mark_when_one_fits():
    chunks = pieces("Hello there, this is a long opening sentence that goes on for a while. Second one.", first=20, most=300)
    assert chunks[0] == Chunk("Hello there,", CLAUSE_PAUSE_S)
    assert chunks[-1] == Chunk("Second one.", 0.0)
    assert chunks[-2].pause_after_s == SENTENCE_PAUSE_S


def test_first_piece_is_the_whole_first_sentence_when_it_fits():
    assert texts("Hi there. This is the second sentence, and it is long.", first=20) == [
        "Hi there.",
        "This is the second sentence, and it is long.",
    ]


def test_first_piece_takes_the_last_clause_mark_that_fits():
    assert texts("One, two, three four five six seven eight nine ten.", first=16)[0] == "One, two,"


def test_first_piece_falls_back_to_whole_words():
    chunks = pieces("One two three four five six seven eight nine ten eleven twelve.", first=12)
    assert chunks[0] == Chunk("One two", WORD_PAUSE_S)


def test_a_word_longer_than_the_limit_is_a_piece_of_its_own():
    word = "Pneumonoultramicroscopicsilicovolcanoconiosis"
    chunks = pieces(f"{word} is a word.", first=10, most=60)
    assert chunks[0] == Chunk(word, WORD_PAUSE_S)
    assert [c.text for c in chunks[1:]] == ["is a word."]


def test_a_word_longer_than_the_maximum_is_cut_between_letters():
    word = "Pneumonoultramicroscopicsilicovolcanoconiosis"  # 45 letters
    chunks = pieces(f"{word} is a word.", first=10, most=20, growth=2.0)
    assert [c.text for c in chunks] == ["Pneumonoul", "tramicroscopicsilico", "volcanoconiosis is", "a word."]
    assert all(len(c.text) <= 20 for c in chunks)


def test_limits_grow_by_the_factor_up_to_the_maximum():
    words = " ".join(["ab"] * 200) + "."
    first, most, growth = 10, 50, 2.0
    chunks = pieces(words, first=first, most=most, growth=growth)
    assert [len(c.text) for c in chunks[:5]] == [8, 20, 38, 50, 50]  # "ab ab ab" ... the longest run of "ab"s that fits
    for k, chunk in enumerate(chunks):
        assert len(chunk.text) <= limit(k, first, most, growth)


def test_no_word_is_ever_split():
    text = "Incomprehensibilities notwithstanding, extraordinarily uncharacteristically verbose sentences proliferate. " * 5
    for first in (1, 5, 12, 30):
        chunks = pieces(text, first=first, most=40, growth=1.5)
        words = [w for c in chunks for w in c.text.split()]
        assert words == normalize(text).split()


def test_pauses():
    chunks = pieces("Alpha beta gamma delta; epsilon zeta. Eta theta iota kappa lambda mu.", first=25, most=25, growth=1.0)
    assert chunks == [
        Chunk("Alpha beta gamma delta;", CLAUSE_PAUSE_S),
        Chunk("epsilon zeta.", SENTENCE_PAUSE_S),
        Chunk("Eta theta iota kappa", WORD_PAUSE_S),
        Chunk("lambda mu.", 0.0),
    ]
    assert pieces("Just one.") == [Chunk("Just one.", 0.0)]


def test_abbreviations_do_not_end_sentences():
    assert texts("Dr. Smith went home. He slept.", first=100) == ["Doctor Smith went home.", "He slept."]


@pytest.mark.parametrize("language", ["en", "de"])
def test_initials_do_not_end_sentences(language):
    assert texts("J. R. R. Tolkien wrote books.", first=100, language=language) == ["J. R. R. Tolkien wrote books."]


def test_decimals_survive_in_other_languages():
    assert texts("Pi ist ungefähr 3.14 groß. Ja!", first=100, language="de") == ["Pi ist ungefähr 3.14 groß.", "Ja!"]


def test_japanese_sentences():
    chunks = pieces("こんにちは。元気ですか？", first=20, language="ja")
    assert chunks == [Chunk("こんにちは。", SENTENCE_PAUSE_S), Chunk("元気ですか?", 0.0)]  # NFKC folds the fullwidth "?"
    # Sizes are in budget characters: each kana or kanji counts HEAVY_WEIGHT (3), the punctuation 1.
    assert texts("今日は、いい天気ですね。そうですね！", first=16, language="ja") == [
        "今日は、",
        "いい天気ですね。",
        "そうですね!",
    ]


def test_sentence_end_markers():
    assert texts('Really?! Yes... Fine\u2026 "Quoted." Done.', first=100) == [
        "Really?!",
        "Yes...",
        "Fine...",
        '"Quoted."',
        "Done.",
    ]
    assert texts("Version 1.2.3 is out.", first=100, language="de") == ["Version 1.2.3 is out."]


def test_punctuation_only_fragments_are_folded():
    assert texts("Hello. ... World.") == ["Hello. ...", "World."]
    assert texts("... Hello.") == ["... Hello."]
    assert texts("Hello world ! ...", first=5) == ["Hello", "world ! ..."]
    assert pieces("... !!! ?") == []


@pytest.mark.parametrize("text", ["", "   ", "\n\t  \r\n"])
def test_empty_input_yields_nothing(text):
    assert pieces(text) == []


def test_bad_arguments():
    with pytest.raises(ValueError):
        split("Hi.", first_chunk_chars=0, max_chunk_chars=10)
    with pytest.raises(ValueError):
        split("Hi.", first_chunk_chars=10, max_chunk_chars=0)
    with pytest.raises(ValueError):
        split("Hi.", first_chunk_chars=10, max_chunk_chars=100, growth=0.5)


def test_chunk_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Chunk("a", 0.0).text = "b"  # type: ignore[misc]


_SPLIT_TOKENS = st.sampled_from(
    [" ", " ", " ", "\n", "a", "bb", "Word", "Extraordinary", "x", "5", "3.14", "J.", "Dr.", "etc.", ".", ",", ";", ":", "!", "?",
     "...", "\u2026", "\u2014", "\u201c", "\"", "(", ")", "\u3002", "\u3001", "\uff01", "\uff1f", "\u3053\u3093", "\u5143\u6c17", "$5", "50%", "10:30"]
)  # fmt: skip
_SPLIT_TEXT = st.lists(_SPLIT_TOKENS, max_size=80).map("".join) | st.text(max_size=80)


@given(
    text=_SPLIT_TEXT,
    first=st.integers(1, 40),
    most=st.integers(1, 200),
    growth=st.floats(1.0, 4.0),
    language=st.sampled_from(["en", "ja"]),
)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_split_covers_the_text_within_the_limits(text, first, most, growth, language):
    chunks = pieces(text, first=first, most=most, growth=growth, language=language)
    normalized = normalize(text, language)
    joined = "".join("".join(c.text.split()) for c in chunks)
    if any(c.isalnum() for c in normalized):
        # Every letter and digit is spoken, in order; all of the text is, unless a run of
        # punctuation or symbols is too long to share a piece of `most` with a letter.
        assert [c for c in joined if c.isalnum()] == [c for c in normalized if c.isalnum()]
        if 2 * longest_unspeakable_run(normalized) + HEAVY_WEIGHT <= most:
            assert joined == "".join(normalized.split())
    else:
        assert chunks == []
    position = 0
    for k, chunk in enumerate(chunks):
        assert chunk.text and chunk.text == chunk.text.strip()
        assert any(c.isalnum() for c in chunk.text)
        assert len(chunk.text) <= most, (k, chunk)  # never over the maximum, even for one word
        assert budget_chars(chunk.text) <= most or len(chunk.text) == 1, (k, chunk)
        cost = budget_chars(chunk.text)
        allowed = limit(k, first, most, growth)
        if allowed > first:  # after the first piece, a sentence's short tail joins the piece before it
            allowed = min(most, allowed + ORPHAN_CHARS)
        assert cost <= allowed or alnum_tokens(chunk.text) == 1 or len(chunk.text) == 1, (k, chunk)
        position = normalized.index(chunk.text, position) + len(chunk.text)  # in order
        expected = (SENTENCE_PAUSE_S, CLAUSE_PAUSE_S, WORD_PAUSE_S) if k < len(chunks) - 1 else (0.0,)
        assert chunk.pause_after_s in expected


def test_split_is_lazy():
    sentence = "This is a sentence of moderate length, with a clause or two, that repeats. "
    huge = sentence * (100_000 // len(sentence) + 1)
    assert len(huge) >= 100_000
    gen = split(huge, first_chunk_chars=20, max_chunk_chars=200, language="ja")
    # Normalisation is done by now; from here on only pieces may be built, one at a time.
    tracemalloc.start()
    try:
        first = next(gen)
        _, first_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        count = 1 + sum(1 for _ in gen)
        _, rest_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first.text == "This is a sentence"
    assert count > 1000
    # All pieces as a list would take well over 100 KB (the text alone is 100,000 characters).
    assert first_peak < 20_000
    assert rest_peak < 20_000


# --- bounds and client faults (issue 14) ------------------------------------------------------


@pytest.mark.parametrize("text", ["Hello ı.e. world", "ı.e.", "İ.e. x", "vſ. y", "Hello ı.E. world"])
def test_dotless_i_and_unicode_case_folds_do_not_crash(text):
    for language in ("en", "ja"):
        out = normalize(text, language)
        assert isinstance(out, str)
        list(split(text, first_chunk_chars=12, max_chunk_chars=400, language=language))
    assert normalize("Hello ı.e. world") == "Hello ı.e. world"  # not the abbreviation "i.e."
    assert normalize("Hello i.e. world") == "Hello that is world"


@pytest.mark.parametrize("text", ["😀🎉👍🏽", "... !!! ???", "\ue000\ue001\U000f0000", "—–-", "\u200d\u0301", "🇯🇵 ★ ♪ ∞", ""])
def test_nothing_speakable(text):
    assert not speakable(text)
    assert not speakable(text, "ja")
    assert pieces(text) == []


@pytest.mark.parametrize("text", ["a", "😀 ok", "٣", "日本", "שלום", "\u0661", "x\ue000"])
def test_speakable(text):
    assert speakable(text) and speakable(text, "ja")


def test_nfkc_expansion_is_counted_after_normalisation():
    text = "\ufdfa" * 20
    assert len(normalize(text, "ar")) >= 360
    assert sum(len(c.text) for c in pieces(text, first=12, most=300, language="ar")) >= 340


def _cjk(n: int) -> str:
    return "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(n))


@pytest.mark.parametrize("language", ["en", "ja", "zh"])
def test_cjk_without_spaces_is_cut_into_bounded_pieces(language):
    text = _cjk(3000)
    chunks = pieces(text, first=12, most=400, language=language)
    assert "".join(c.text for c in chunks) == text
    assert len(chunks[0].text) <= 12 // HEAVY_WEIGHT
    for chunk in chunks:
        assert budget_chars(chunk.text) <= 400
        assert len(chunk.text) <= 400 // HEAVY_WEIGHT
    assert len(chunks) >= 3000 * HEAVY_WEIGHT // 400


def test_cjk_is_cut_at_its_own_punctuation_first():
    sentence = "今日は本当にいい天気ですね、散歩に行きましょう；公園まで歩きます：楽しみです"
    chunks = pieces(sentence * 3 + "。", first=12, most=60, language="ja")
    assert "".join(c.text for c in chunks) == normalize(sentence * 3 + "。", "ja")
    assert all(budget_chars(c.text) <= 60 for c in chunks)
    # After the small first piece, every cut is at a clause mark (NFKC folds the fullwidth ones).
    assert all(c.text[-1] in ",;:\u3001" for c in chunks[1:-1]), [c.text for c in chunks]


def test_hard_cuts_keep_combining_sequences_and_emoji_whole():
    accented = "e\u0301" * 50  # 100 code points, no spaces
    for chunk in pieces(accented, first=5, most=9):
        assert not unicodedata.combining(chunk.text[0]), chunk
        assert len(chunk.text) <= 9
    family = "a" + "👩\u200d👩\u200d👧" * 10
    for chunk in pieces(family, first=12, most=40):
        assert chunk.text[0] != "\u200d" and chunk.text[-1] != "\u200d", chunk
        assert budget_chars(chunk.text) <= 40


def test_punctuation_runs_longer_than_the_maximum_are_dropped_not_kept_whole():
    chunks = pieces("a" + "!" * 1000 + " b" + "?" * 1000, first=12, most=50)
    assert [c.text[0] for c in chunks] == ["a", "b"]
    assert all(len(c.text) <= 50 for c in chunks)


_ANY_TEXT = st.lists(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
    | st.sampled_from(["ı", "İ", "ı.e.", "😀", "👍🏽", "\u200d", "\ue000", "\U000f0001", "\u0301", "\u05e9", "\u0627", "\u202e", "\ufdfa",
                       "日本語", "。", "、", " ", ".", "i.e.", "Dr.", "5", "$", "\x00"]),
    max_size=40,
).map("".join)  # fmt: skip


@given(text=_ANY_TEXT, first=st.integers(1, 40), most=st.integers(1, 120), language=st.sampled_from(["en", "ja", "ar"]))
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_normalize_and_split_never_raise_and_respect_the_bound(text, first, most, language):
    out = normalize(text, language)
    assert isinstance(out, str)
    assert speakable(text, language) == any(c.isalnum() for c in out)
    chunks = list(split(text, first_chunk_chars=first, max_chunk_chars=most, language=language))
    assert bool(chunks) == speakable(text, language)
    for chunk in chunks:
        assert 0 < len(chunk.text) <= most
        assert budget_chars(chunk.text) <= most or len(chunk.text) == 1


@given(st.text(alphabet=st.characters(), max_size=60))
@settings(max_examples=300, deadline=None)
def test_normalize_never_raises_even_with_lone_surrogates(text):
    assert "\ud800" not in normalize(text) + normalize(text, "ja")


def test_a_cut_between_words_does_not_end_on_a_word_that_leans_on_the_next() -> None:
    texts = [c.text for c in split("The train to Boston leaves at 7:45 in the morning.", first_chunk_chars=12, max_chunk_chars=300)]
    assert texts[0] == "The train"  # not "The train to"
    assert not any(t.split()[-1] in ("to", "the", "of", "at") for t in texts)
    assert all(not t.endswith("seven") for t in texts)  # "seven forty-five" is one number


def test_a_sentences_short_tail_is_not_a_piece_of_its_own() -> None:
    texts = [c.text for c in split("Where did you put the keys to the blue car?", first_chunk_chars=12, max_chunk_chars=300)]
    assert texts[-1].endswith("the blue car?") and len(texts) == 2
    # The first piece stays small: first audio comes from it.
    assert [c.text for c in split("Hello there, how are you?", first_chunk_chars=12, max_chunk_chars=300)][0] == "Hello there,"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("Our next review is on March 14, 2025.", "Our next review is on March fourteenth, twenty twenty-five."),
        ("Due Dec 31.", "Due Dec thirty-first."),
        ("Jan 1st", "Jan first"),
        ("See you May 5.", "See you May fifth."),
        ("May 5 people come?", "May five people come?"),  # the verb, not the month
        ("March 14.5 percent", "March fourteen point five percent"),
    ],
)
def test_a_month_and_day_is_read_as_a_date(text: str, said: str) -> None:
    assert normalize(text) == said
