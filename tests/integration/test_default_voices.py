"""Every default voice of `tts-1` and `tts-1-hd`, asked for with the OpenAI SDK through the
gateway, is heard word for word by a real recogniser (Whisper tiny.en, `tests/listening.py`),
and its female voices sound higher than its male ones.

A guard for what duration and energy checks never see: Kokoro's duration cap once swallowed the
first words of every piece ("Whether it's sunny with a lot is from the west"), and a cap on the
last sound of a piece cut between words turned "the blue car" into "the blow. Car"."""

from __future__ import annotations

import functools
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.audio_checks import median_pitch_hz
from tests.conftest import Gateway
from tests.listening import transcribe_pcm, word_error_rate, words
from voxrouter.router.config import VoicePin

pytestmark = pytest.mark.slow

# Numbers, a date, names, places, questions: the gateway's text normaliser reads the digits,
# `tests.listening.normalise` puts both sides in the same words before they are compared.
SENTENCES = (
    "The weather today is sunny with a light breeze from the west.",
    "Can you call Sarah Johnson before the meeting starts?",
    "The train to Boston leaves at 6 in the morning.",
    "She bought 12 apples and 3 loaves of bread for 9 dollars.",
    "Our next review is on March 14, 2025.",
    "Where did you put the keys to the blue car?",
    "Doctor Miller has worked at the hospital for 20 years.",
    "Please turn left at the second traffic light.",
    "The museum opens on Tuesday and closes at noon on Sunday.",
    "How many people live in the city of Chicago?",
)
MAX_WER = 0.05  # per voice, over all the sentences' words
ALIASES = ("tts-1", "tts-1-hd")
# OpenAI's voices and their genders (alloy is neutral).
GENDERS = {
    "alloy": "neutral",
    "nova": "female", "shimmer": "female", "coral": "female", "sage": "female", "marin": "female",
    "onyx": "male", "echo": "male", "ash": "male", "ballad": "male", "fable": "male", "verse": "male", "cedar": "male",
}  # fmt: skip
MAPPINGS = [(alias, name) for alias in ALIASES for name in GENDERS]


def _served(gateway: Gateway, alias: str, name: str) -> tuple[str, str]:
    """The (model, voice id) the alias's map sends a voice name to."""
    target = gateway.settings.config.aliases[alias].targets[0]
    mapped = target.voices.get(name, name)
    if isinstance(mapped, VoicePin):
        return mapped.model, mapped.voice
    return target.model, mapped


@pytest.fixture(scope="module")
def speech(gateway: Gateway, database_engine: str) -> Any:
    """The gateway's PCM for (alias, voice name, sentence), synthesised once per served voice
    (two names mapped to one voice would be heard twice for nothing)."""
    if database_engine != "sqlite":
        pytest.skip("what is heard does not depend on the database: listened to once, on SQLite")
    client = OpenAI(base_url=gateway.url + "/v1", api_key=gateway.new_key(5.0), max_retries=0, timeout=120)
    served: dict[tuple[str, str, str], bytes] = {}

    @functools.cache
    def get(alias: str, name: str, text: str) -> bytes:
        key = (*_served(gateway, alias, name), text)
        if key not in served:
            with client.audio.speech.with_streaming_response.create(model=alias, voice=name, input=text, response_format="pcm") as response:
                assert response.headers["x-voxrouter-provider"] == "local"
                served[key] = response.read()
        return served[key]

    return get


def test_the_maps_give_distinct_listed_voices_of_the_right_gender(gateway: Gateway, api_key: str) -> None:
    response = httpx.get(gateway.url + "/v1/voices", params={"provider": "local"}, headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 200, response.text
    listed = {(voice["labels"]["engine"], voice["id"]): voice for voice in response.json()["voices"]}
    for alias in ALIASES:
        served = {name: _served(gateway, alias, name) for name in GENDERS}
        assert len(set(served.values())) == len(GENDERS), (alias, served)  # 13 names, 13 voices
        for name, (model, voice_id) in served.items():
            provider, _, engine = model.partition("/")
            assert provider == "local", (alias, name, model)
            voice = listed[(engine, voice_id)]  # /v1/voices lists it, with its labels
            assert voice["language"].startswith("en-") and voice["labels"]["accent"] in ("American", "British"), voice
            if GENDERS[name] != "neutral":
                assert voice["labels"]["gender"] == GENDERS[name], (alias, name, voice)
        fable = served["fable"]
        assert listed[(fable[0].partition("/")[2], fable[1])]["labels"]["accent"] == "British", alias


@pytest.mark.parametrize(("alias", "name"), MAPPINGS, ids=[f"{a}-{n}" for a, n in MAPPINGS])
def test_every_default_voice_says_every_word(speech: Any, alias: str, name: str) -> None:
    heard = {text: transcribe_pcm(speech(alias, name, text)) for text in SENTENCES}
    errors = sum(word_error_rate(text, said) * len(words(text)) for text, said in heard.items())
    rate = errors / sum(len(words(text)) for text in SENTENCES)
    wrong = {text: said for text, said in heard.items() if word_error_rate(text, said) > 0}
    print(f"{alias} {name}: WER {rate:.3f}", wrong)  # the figures, with -s
    assert rate <= MAX_WER, (round(rate, 3), wrong)


@pytest.mark.parametrize("alias", ALIASES)
def test_female_voices_sound_higher_than_male_ones(speech: Any, alias: str) -> None:
    pitch = {name: median_pitch_hz(b"".join(speech(alias, name, text) for text in SENTENCES[:3])) for name in GENDERS}
    female = {name: hz for name, hz in pitch.items() if GENDERS[name] == "female"}
    male = {name: hz for name, hz in pitch.items() if GENDERS[name] == "male"}
    print(alias, "median pitch Hz", {name: round(hz) for name, hz in pitch.items()})
    assert min(female.values()) > max(male.values()), {name: round(hz) for name, hz in pitch.items()}
