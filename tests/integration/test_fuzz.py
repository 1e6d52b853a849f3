"""Property-based: whatever JSON arrives, the gateway answers in the documented shape, never 5xx,
and never leaves money on hold."""

from __future__ import annotations

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
_json = st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)

_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["openai/tts-1", "tts-1", "cartesia/sonic-2", "elevenlabs/x", "nope/x", "/", ""]) | _json,
        "input": st.text(max_size=60) | _json,
        "voice": st.sampled_from(["alloy", "nova", "zzz"]) | st.fixed_dictionaries({"id": st.text(max_size=10)}) | _json,
        "response_format": st.sampled_from(["mp3", "opus", "aac", "flac", "wav", "pcm", "ogg"]) | _json,
        "speed": st.floats(allow_nan=False, allow_infinity=False) | _json,
        "instructions": st.text(max_size=20) | _json,
        "stream_format": st.sampled_from(["audio", "sse", "x"]) | _json,
        "provider_options": st.dictionaries(st.text(max_size=8), _json, max_size=3) | _json,
        "extra": _json,
    },
) | _json

_DOCUMENTED = {200, 400, 402, 413, 502, 503, 504}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_bodies)
def test_speech_never_fails_undocumented(gateway, api_key, body):
    headers = {"Authorization": f"Bearer {api_key}"}
    response = httpx.post(gateway.url + "/v1/audio/speech", json=body, headers=headers, timeout=10)
    assert response.status_code in _DOCUMENTED, (response.status_code, response.text)
    if response.status_code != 200:
        error = response.json()
        assert set(error) == {"error", "details"} and error["details"]
    credits = httpx.get(gateway.url + "/v1/credits", headers=headers).json()
    assert credits["reservedMicros"] == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.text(max_size=6), provider=st.text(max_size=12), language=st.text(max_size=6), gender=st.text(max_size=6))
def test_query_parameters_never_fail_undocumented(gateway, api_key, limit, provider, language, gender):
    headers = {"Authorization": f"Bearer {api_key}"}
    activity = httpx.get(gateway.url + "/v1/credits/activity", params={"limit": limit}, headers=headers)
    assert activity.status_code in (200, 400)
    voices = httpx.get(gateway.url + "/v1/voices", params={"provider": provider, "language": language, "gender": gender}, headers=headers)
    assert voices.status_code == 200 and isinstance(voices.json()["voices"], list)


def test_raw_bytes_that_are_not_json(gateway, api_key):
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    for content in (b"\xff\xfe\x00", b"", b"null", b'{"model": "openai/tts-1", "input": "\\ud800", "voice": "alloy"}', b"[" * 5000):
        response = httpx.post(gateway.url + "/v1/audio/speech", content=content, headers=headers)
        assert response.status_code in (200, 400), (content[:20], response.status_code, response.text)
