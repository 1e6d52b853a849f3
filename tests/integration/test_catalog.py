"""`/v1/providers`, `/v1/voices` (merged, filtered, cached) and `/v1/status`."""

from __future__ import annotations

import httpx


def _get(gateway, key: str, path: str) -> httpx.Response:
    return httpx.get(gateway.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def test_providers_list_models_and_formats(gateway, api_key):
    providers = {p["id"]: p for p in _get(gateway, api_key, "/v1/providers").json()}
    assert set(providers) == {"openai", "elevenlabs", "cartesia", "local"}
    local = {m["id"]: m for m in providers["local"]["models"]}
    assert set(local) == {"kokoro", "piper", "hibari", "chatterbox", "moss-tts-nano"}
    assert local["kokoro"]["response_formats"] == ["mp3", "opus", "aac", "flac", "wav", "pcm"]  # pcm, transcoded
    assert local["piper"]["price_micros_per_1k_chars"] == 0
    tts1 = next(m for m in providers["openai"]["models"] if m["id"] == "tts-1")
    assert tts1["response_formats"] == ["mp3", "opus", "aac", "flac", "wav", "pcm"]
    assert tts1["max_input_chars"] == 4096 and tts1["price_micros_per_1k_chars"] == 15_000
    turbo = next(m for m in providers["elevenlabs"]["models"] if m["id"] == "eleven_turbo_v2_5")
    assert set(turbo["response_formats"]) == {"mp3", "opus", "aac", "flac", "wav", "pcm"}  # via transcoding
    assert providers["cartesia"]["name"] == "Cartesia" and providers["cartesia"]["website"].startswith("https://")


def test_voices_merge_and_filter(gateway, api_key, emulators):
    voices = _get(gateway, api_key, "/v1/voices").json()["voices"]
    by_provider = {v["provider"] for v in voices}
    assert by_provider == {"openai", "elevenlabs", "cartesia", "local"}
    assert any(v["id"] == "alloy" and v["provider"] == "openai" for v in voices)
    assert any(v["id"] == "21m00Tcm4TlvDq8ikWAM" for v in voices)

    only = _get(gateway, api_key, "/v1/voices?provider=elevenlabs,cartesia").json()["voices"]
    assert only and {v["provider"] for v in only} <= {"elevenlabs", "cartesia"}

    female = _get(gateway, api_key, "/v1/voices?gender=FEMALE").json()["voices"]
    assert female and all(v["labels"]["gender"].lower() == "female" for v in female)
    assert len(female) < len(voices)

    english = _get(gateway, api_key, "/v1/voices?language=EN").json()["voices"]
    assert english and all(v["language"].lower().startswith("en") for v in english)
    assert _get(gateway, api_key, "/v1/voices?language=zz").json() == {"voices": []}


def test_voices_are_cached(gateway, api_key, emulators):
    _get(gateway, api_key, "/v1/voices?provider=elevenlabs")
    emulators["elevenlabs"].state.requests.clear()
    for _ in range(3):
        assert _get(gateway, api_key, "/v1/voices?provider=elevenlabs").json()["voices"]
    assert [r for r in emulators["elevenlabs"].state.requests if "voices" in r.path] == []
