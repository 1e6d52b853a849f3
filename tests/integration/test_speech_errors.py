"""Every bad input and every upstream failure: the documented status and shape, and no money lost."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import emulated_config, running_gateway

BODY = {"model": "openai/tts-1", "voice": "alloy", "input": "Hello there."}


def _post(gateway, key: str | None, body=None, *, content: bytes | None = None, headers=None) -> httpx.Response:
    headers = dict(headers or {})
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if content is not None:
        return httpx.post(gateway.url + "/v1/audio/speech", content=content, headers=headers, timeout=10)
    return httpx.post(gateway.url + "/v1/audio/speech", json=body if body is not None else BODY, headers=headers, timeout=10)


def _credits(gateway, key: str) -> dict:
    return httpx.get(gateway.url + "/v1/credits", headers={"Authorization": f"Bearer {key}"}).json()


def _assert_error(response: httpx.Response, status: int, code: str, *, details_has: str = "") -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "details"}
    assert body["error"] == code
    assert details_has.lower() in body["details"].lower()
    assert response.headers["x-request-id"]
    return body["details"]


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({**BODY, "colour": "blue"}, "colour"),
        ({**BODY, "speed": "fast"}, "speed"),
        ({**BODY, "speed": 9}, "speed"),
        ({**BODY, "response_format": "ogg"}, "response_format"),
        ({**BODY, "stream_format": "video"}, "stream_format"),
        ({**BODY, "input": ""}, "input"),
        ({k: v for k, v in BODY.items() if k != "voice"}, "voice"),
        ({**BODY, "provider_options": [1, 2]}, "provider_options"),
        ([1, 2, 3], "body"),
    ],
)
def test_invalid_body(gateway, api_key, body, fragment):
    _assert_error(_post(gateway, api_key, body), 400, "invalid_body", details_has=fragment)


def test_malformed_json(gateway, api_key):
    _assert_error(_post(gateway, api_key, content=b'{"model": '), 400, "invalid_body", details_has="json")


def test_oversize_body(gateway, api_key):
    response = _post(gateway, api_key, content=b"{" + b" " * 2_000_000 + b"}")
    _assert_error(response, 413, "invalid_body", details_has="larger than")


@pytest.mark.parametrize(
    "model, fragment",
    [("bad/x", "unknown_provider: bad"), ("no-slash-no-alias", "provider/model_id"), ("openai/", "provider/model_id"), ("/tts-1", "provider/model_id")],
)
def test_invalid_model(gateway, api_key, model, fragment):
    _assert_error(_post(gateway, api_key, {**BODY, "model": model}), 400, "invalid_model", details_has=fragment)


def test_input_over_model_limit_names_the_limit(gateway, api_key):
    details = _assert_error(_post(gateway, api_key, {**BODY, "input": "a" * 4097}), 400, "invalid_body")
    assert "4096" in details and "openai/tts-1" in details


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer pk_not_a_real_key", "Basic abc", "Bearer vr_session_x"])
def test_unauthorized(gateway, header):
    headers = {"Authorization": header} if header else {}
    _assert_error(_post(gateway, None, headers=headers), 401, "unauthorized")


def test_insufficient_credit_writes_nothing(gateway, key_factory):
    key = key_factory(0.00001)  # 10 micro-dollars; "Hello there." costs 180 on tts-1
    _assert_error(_post(gateway, key), 402, "insufficient_credit")
    assert _credits(gateway, key) == {"balanceMicros": 10, "reservedMicros": 0}


@pytest.mark.parametrize(
    "behaviour, status, fragment",
    [
        ({"fail_status": 500}, 502, "HTTP 500"),
        ({"fail_status": 503}, 502, "HTTP 503"),
        ({"fail_status": 429, "retry_after_s": 7}, 502, "HTTP 429"),
        ({"hang": True}, 504, "within"),
    ],
)
def test_upstream_failures_before_audio_refund(gateway, emulators, api_key, behaviour, status, fragment):
    for name, value in behaviour.items():
        setattr(emulators["openai"].state.behaviour, name, value)
    before = _credits(gateway, api_key)
    response = _post(gateway, api_key)
    _assert_error(response, status, "upstream_error", details_has=fragment)
    if behaviour.get("retry_after_s"):
        assert response.headers["retry-after"] == "7"
    assert _credits(gateway, api_key) == before


def test_upstream_rejecting_our_key_names_provider_not_key(emulators, tmp_path):
    config = emulated_config(emulators)
    openai = config.providers["openai"].model_copy(update={"api_key": "sk-wrong-secret-value"})
    config = config.model_copy(update={"providers": {**config.providers, "openai": openai}})
    with running_gateway(tmp_path, config) as gw:
        key = gw.new_key(1)
        details = _assert_error(_post(gw, key), 502, "upstream_error", details_has="openai")
        assert "sk-wrong" not in details and "credentials" in details
        assert _credits(gw, key)["reservedMicros"] == 0


def test_provider_without_key_is_unavailable(emulators, tmp_path):
    config = emulated_config(emulators)
    cartesia = config.providers["cartesia"].model_copy(update={"api_key": None})
    config = config.model_copy(update={"providers": {**config.providers, "cartesia": cartesia}})
    with running_gateway(tmp_path, config) as gw:
        key = gw.new_key(1)
        body = {"model": "cartesia/sonic-2", "voice": "a0e99841-438c-4a64-b679-ae501e7d6091", "input": "Hi"}
        _assert_error(_post(gw, key, body), 503, "provider_unavailable", details_has="missing_api_key")
        status = httpx.get(gw.url + "/v1/status", headers={"Authorization": f"Bearer {key}"}).json()
        assert {"id": "cartesia", "state": "unavailable", "reason": "missing_api_key"} in status
        assert {"id": "openai", "state": "available"} in status
        assert _credits(gw, key) == {"balanceMicros": 1_000_000, "reservedMicros": 0}
        activity = httpx.get(gw.url + "/v1/credits/activity", headers={"Authorization": f"Bearer {key}"}).json()
        assert [row["kind"] for row in activity] == ["topup"]  # refused before any hold


@pytest.mark.parametrize(
    "model, voice, options",
    [
        ("openai/tts-1", "alloy", {"input": "x" * 4000}),
        ("openai/tts-1", "alloy", {"model": "tts-1-hd"}),
        ("openai/tts-1", "alloy", {"stream_format": "sse"}),
        ("elevenlabs/eleven_flash_v2_5", "21m00Tcm4TlvDq8ikWAM", {"text": "longer text"}),
        ("cartesia/sonic-2", "a0e99841-438c-4a64-b679-ae501e7d6091", {"transcript": "t", "model_id": "sonic-3"}),
    ],
)
def test_provider_options_cannot_override_what_was_priced(gateway, emulators, api_key, model, voice, options):
    body = {"model": model, "voice": voice, "input": "Hi", "provider_options": options}
    details = _assert_error(_post(gateway, api_key, body), 400, "invalid_body", details_has="provider_options may not set")
    assert all(field in details for field in options)
    assert emulators[model.split("/")[0]].state.requests == []
    assert _credits(gateway, api_key) == {"balanceMicros": 5_000_000, "reservedMicros": 0}


def test_client_error_from_upstream_is_400(gateway, api_key):
    response = _post(gateway, api_key, {**BODY, "voice": "not-a-voice"})
    _assert_error(response, 400, "invalid_body", details_has="openai rejected the request")


def test_unknown_route_and_method(gateway, api_key):
    _assert_error(httpx.get(gateway.url + "/v1/nope"), 404, "not_found")
    _assert_error(httpx.get(gateway.url + "/v1/audio/speech"), 405, "method_not_allowed")
