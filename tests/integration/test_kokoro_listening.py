"""`tts-1-hd` (Kokoro) through the gateway is heard word for word by a real recogniser.

A guard for the duration cap patched into Kokoro's graph: capping the leading pad token too
swallowed the start of every piece ("Whether it's sunny with a lot is from the west" for "The
weather today is sunny with a light breeze from the west"), which duration and energy checks
never saw."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Gateway
from tests.listening import transcribe_pcm, word_error_rate

pytestmark = pytest.mark.slow

SENTENCES = (
    "The weather today is sunny with a light breeze from the west.",
    "Please remember to bring your umbrella tomorrow morning.",
    "She opened the window and listened to the birds singing.",
    "Our train leaves the station early in the evening.",
    "Could you tell me where the nearest library is?",
)
# Mean word error rate over SENTENCES, per voice. The default tts-1-hd voices are Kokoro's Japanese
# packs (jf_alpha, jm_kumo: the only ones on the package registry) speaking English. Measured with the
# leading pad capped (the bug): 0.75 and 0.52; with it fixed: 0.36 and 0.17 (the same model called
# raw on whole sentences: 0.11 for jf_alpha). These bounds fail the bug; issue 16's English voice
# packs and runner work bring the target down to 0.05.
MAX_WER = {"alloy": 0.45, "onyx": 0.30}


def _speech(gateway: Gateway, key: str, voice: str, text: str) -> bytes:
    body = {"model": "tts-1-hd", "voice": voice, "input": text, "response_format": "pcm"}
    response = httpx.post(gateway.url + "/v1/audio/speech", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["x-voxrouter-provider"] == "local"
    return response.content


@pytest.mark.parametrize("voice", ["alloy", "onyx"])
def test_tts_1_hd_says_every_word(gateway: Gateway, api_key: str, voice: str, database_engine: str) -> None:
    if database_engine != "sqlite":
        pytest.skip("what is heard does not depend on the database: listened to once, on SQLite")
    heard = {text: transcribe_pcm(_speech(gateway, api_key, voice, text)) for text in SENTENCES}
    rates = {text: word_error_rate(text, said) for text, said in heard.items()}
    mean = sum(rates.values()) / len(rates)
    assert mean <= MAX_WER[voice], {text: (round(rates[text], 2), heard[text]) for text in SENTENCES}
