"""Per-key limits over HTTP: requests and characters per minute, concurrency slots, the
`X-RateLimit-*` headers, organization defaults from config, and one global limit for
three gateway processes sharing a Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Emulator, Gateway, emulated_config, running_gateway
from tests.databases import query
from voxrouter.router.config import LimitValues
from voxrouter.router.server_commands import create_key
from voxrouter.router.settings import Settings

TEXT = "Fifteen chars.."  # 15 characters


def _get(gateway: Gateway | str, key: str, path: str = "/v1/credits") -> httpx.Response:
    url = gateway if isinstance(gateway, str) else gateway.url
    return httpx.get(url + path, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def _speak(url: str, key: str, text: str = TEXT, **extra: Any) -> httpx.Response:
    body = {"model": "openai/tts-1", "voice": "alloy", "input": text, **extra}
    return httpx.post(url + "/v1/audio/speech", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_requests_per_minute_count_down_in_headers_then_429(gateway: Gateway) -> None:
    key = gateway.new_key(requests_per_minute=3)
    before = int(time.time())
    remaining = []
    for _ in range(3):
        response = _get(gateway, key)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit"] == "3"
        remaining.append(int(response.headers["x-ratelimit-remaining"]))
        assert before < int(response.headers["x-ratelimit-reset"]) <= before + 62  # a full minute, rounded up
    assert remaining == [2, 1, 0]
    refused = _get(gateway, key, "/v1/voices?provider=openai")
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited" and "per-minute" in refused.json()["details"]
    assert 15 <= int(refused.headers["retry-after"]) <= 20  # one request refills in 60/3 s
    assert refused.headers["x-ratelimit-remaining"] == "0"
    speech = _speak(gateway.url, key)
    assert speech.status_code == 429 and speech.json()["error"] == "rate_limited"
    # The refused speech left a usage row, and another key of the same org is unaffected.
    assert _get(gateway, gateway.new_key()).status_code == 200


def test_characters_per_minute_and_the_headers_on_every_outcome(gateway: Gateway) -> None:
    key = gateway.new_key(characters_per_minute=20)
    served = _speak(gateway.url, key)
    assert served.status_code == 200
    assert served.headers["x-ratelimit-limit-characters"] == "20"
    assert served.headers["x-ratelimit-remaining-characters"] == "5"
    assert "x-ratelimit-limit" in served.headers  # the organization default for requests
    refused = _speak(gateway.url, key)
    assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 31  # 10 more characters at 20 per minute
    bad = _speak(gateway.url, key, text="")  # a 400 still carries the headers
    assert bad.status_code == 400 and "x-ratelimit-remaining" in bad.headers
    poor = gateway.new_key(credit_usd=0)
    broke = _speak(gateway.url, poor)
    assert broke.status_code == 402 and "x-ratelimit-remaining" in broke.headers


def test_session_routes_carry_no_key_limits(gateway: Gateway) -> None:
    email = f"u{uuid.uuid4().hex[:8]}@example.com"
    registered = httpx.post(gateway.url + "/v1/auth/register", json={"email": email, "password": "correct horse battery"})
    session = registered.json()["session_token"]
    response = _get(gateway, session, "/v1/usage")
    assert response.status_code == 200 and "x-ratelimit-limit" not in response.headers


def test_a_slot_is_freed_when_the_client_disconnects_mid_stream(gateway: Gateway, emulators: dict[str, Emulator]) -> None:
    emulators["openai"].state.behaviour.stream_time_s = 3.0
    key = gateway.new_key(max_concurrency=1)
    with httpx.Client(timeout=10) as client:
        body = {"model": "openai/tts-1", "voice": "alloy", "input": TEXT}
        with client.stream("POST", gateway.url + "/v1/audio/speech", json=body, headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status_code == 200
            audio = r.iter_raw()  # kept: a dropped iterator would close the connection at once
            next(audio)
            busy = _speak(gateway.url, key)
            assert busy.status_code == 429 and busy.json()["error"] == "concurrency_limited"
            assert busy.headers["retry-after"] == "1"
            assert asyncio.run(gateway.internals.limits.slots_in_use(_key_id(gateway))) == 1
        # The client hung up mid-stream: the slot comes back without waiting for the stream's end.
    emulators["openai"].state.behaviour.stream_time_s = 0.05
    deadline = time.monotonic() + 2
    while (status := _speak(gateway.url, key).status_code) == 429 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status == 200


def _key_id(gateway: Gateway) -> str:
    return query(gateway.settings.database_url, "SELECT id FROM api_keys ORDER BY created_at DESC LIMIT 1")[0][0]


def test_limits_come_from_the_key_then_the_organization_then_the_defaults(
    tmp_path: Path, emulators: dict[str, Emulator]
) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'gateway.db'}")
    org_key = asyncio.run(create_key(settings, "acme", "plain", 1_000_000))
    own_key = asyncio.run(create_key(settings, "acme", "own", 1_000_000, requests_per_minute=4))
    other_key = asyncio.run(create_key(settings, "other", "plain", 1_000_000))
    acme = query(settings.database_url, "SELECT id FROM orgs WHERE name = 'acme'")[0][0]
    config = emulated_config(emulators)
    limits = config.limits.model_copy(
        update={"defaults": LimitValues(requests_per_minute=7), "organizations": {acme: LimitValues(requests_per_minute=2)}}
    )
    with running_gateway(tmp_path, config.model_copy(update={"limits": limits})) as gateway:
        assert _get(gateway, org_key).headers["x-ratelimit-limit"] == "2"
        assert _get(gateway, own_key).headers["x-ratelimit-limit"] == "4"
        assert _get(gateway, other_key).headers["x-ratelimit-limit"] == "7"


def test_keys_api_sets_rate_limits(gateway: Gateway) -> None:
    email = f"u{uuid.uuid4().hex[:8]}@example.com"
    session = httpx.post(gateway.url + "/v1/auth/register", json={"email": email, "password": "correct horse battery"}).json()[
        "session_token"
    ]
    headers = {"Authorization": f"Bearer {session}"}
    created = httpx.post(
        gateway.url + "/v1/keys", json={"name": "slow", "requestsPerMinute": 1, "charactersPerMinute": 100}, headers=headers
    )
    assert created.status_code == 201
    assert created.json()["key"]["requestsPerMinute"] == 1 and created.json()["key"]["charactersPerMinute"] == 100
    secret = created.json()["secret"]
    assert _get(gateway, secret).status_code == 200
    assert _get(gateway, secret).status_code == 429
    bad = httpx.post(gateway.url + "/v1/keys", json={"name": "x", "requestsPerMinute": 0}, headers=headers)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_body"


