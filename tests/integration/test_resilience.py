"""Faults injected into the loopback emulators: retries, per-attempt deadlines, breakers,
fallback chains and voice mapping, each checked through the gateway's HTTP surface, its
usage rows and its wallet. Every test runs its own gateway, so breaker state is its own."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FIRST_BYTE_TIMEOUT_S, Emulator, Gateway, emulated_config, running_gateway
from tests.databases import query
from voxrouter.providers.spec import BreakerSpec
from voxrouter.router.config import AliasSpec, Config, RetrySpec

CREDIT_MICROS = 5_000_000
TEXT = "Hello there, this is a resilience test."


def resilient_config(
    emulators: dict[str, Emulator],
    *,
    fail_max: int = 3,
    reset_timeout_s: float = 0.6,
    attempts: int = 2,
    **config_updates: Any,
) -> Config:
    config = emulated_config(emulators)
    resilience = config.resilience.model_copy(
        update={
            # One test tenant: these tests are about the circuit itself (how one tenant
            # cannot open it for others is test_breaker_tenants.py's).
            "breaker": BreakerSpec(fail_max=fail_max, reset_timeout_s=reset_timeout_s, tenants_to_open=1),
            "retry": RetrySpec(attempts=attempts, backoff_s=0.01, backoff_max_s=0.05, max_retry_after_s=2.0, deadline_s=20),
            "probe_interval_s": 3600.0,
        }
    )
    return config.model_copy(update={"resilience": resilience, **config_updates})


def speak(gateway: Gateway, key: str, model: str = "openai/tts-1", voice: str = "alloy", **extra: Any) -> httpx.Response:
    body = {"model": model, "voice": voice, "input": TEXT, "response_format": "mp3", **extra}
    return httpx.post(gateway.url + "/v1/audio/speech", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def get(gateway: Gateway, key: str, path: str) -> httpx.Response:
    return httpx.get(gateway.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def last_usage(gateway: Gateway) -> dict[str, Any]:
    row = query(
        gateway.settings.database_url,
        "SELECT status, error_code, provider, model, cost_micros, attempts FROM usage_records ORDER BY created_at DESC, rowid DESC LIMIT 1",
    )[0]
    return dict(zip(("status", "error_code", "provider", "model", "cost_micros", "attempts"), (*row[:5], json.loads(row[5]))))


def credits(gateway: Gateway, key: str) -> tuple[int, int]:
    body = get(gateway, key, "/v1/credits").json()
    return body["balanceMicros"], body["reservedMicros"]


def ledger_kinds(gateway: Gateway) -> list[str]:
    return [k for (k,) in query(gateway.settings.database_url, "SELECT kind FROM ledger WHERE kind != 'topup' ORDER BY id")]


def status_of(gateway: Gateway, key: str, provider: str) -> dict[str, Any]:
    return next(s for s in get(gateway, key, "/v1/status").json() if s["id"] == provider)


def wait_for(predicate: Any, timeout_s: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


# --- retries and deadlines ----------------------------------------------------------------


def test_a_500_before_the_first_byte_is_retried(tmp_path: Path, emulators: dict[str, Emulator]) -> None:
    openai = emulators["openai"].state
    openai.script = ["500"]
    with running_gateway(tmp_path, resilient_config(emulators)) as gateway:
        key = gateway.new_key()
        response = speak(gateway, key)
        assert response.status_code == 200, response.text
        assert response.headers["x-voxrouter-provider"] == "openai"
        assert openai.synthesis_requests == 2
        usage = last_usage(gateway)
        assert usage["status"] == 200 and usage["cost_micros"] > 0
        assert usage["attempts"] == [
            {"provider": "openai", "model": "tts-1", "voice": "alloy", "outcome": "failed", "reason": "unavailable"},
            {"provider": "openai", "model": "tts-1", "voice": "alloy", "outcome": "served"},
        ]
        assert ledger_kinds(gateway) == ["reserve", "commit"]  # once, whatever the attempts


def test_an_upstream_that_hangs_gets_504_after_each_attempts_deadline(tmp_path: Path, emulators: dict[str, Emulator]) -> None:
    openai = emulators["openai"].state
    openai.behaviour.hang = True
    with running_gateway(tmp_path, resilient_config(emulators)) as gateway:
        key = gateway.new_key()
        started = time.monotonic()
        response = speak(gateway, key)
        elapsed = time.monotonic() - started
        assert response.status_code == 504 and response.json()["error"] == "upstream_error"
        assert 2 * FIRST_BYTE_TIMEOUT_S <= elapsed < 2 * FIRST_BYTE_TIMEOUT_S + 2.5
        assert openai.synthesis_requests == 2
        assert credits(gateway, key) == (CREDIT_MICROS, 0)
        usage = last_usage(gateway)
        assert (usage["status"], usage["error_code"], usage["cost_micros"]) == (504, "upstream_error", 0)
        assert [a["reason"] for a in usage["attempts"]] == ["timeout", "timeout"]
        assert ledger_kinds(gateway) == ["reserve", "refund"]


def test_a_slow_first_byte_within_the_deadline_is_served(tmp_path: Path, emulators: dict[str, Emulator]) -> None:
    emulators["openai"].state.script = ["slow"]
    with running_gateway(tmp_path, resilient_config(emulators)) as gateway:
        started = time.monotonic()
        response = speak(gateway, gateway.new_key())
        assert response.status_code == 200 and time.monotonic() - started >= 0.4
        assert emulators["openai"].state.synthesis_requests == 1


def test_a_429_with_a_short_retry_after_is_waited_out(tmp_path: Path, emulators: dict[str, Emulator]) -> None:
    openai = emulators["openai"].state
    openai.script = ["429"]  # Retry-After: 1
    with running_gateway(tmp_path, resilient_config(emulators)) as gateway:
        started = time.monotonic()
        response = speak(gateway, gateway.new_key())
        assert response.status_code == 200
        assert time.monotonic() - started >= 1.0
        assert openai.synthesis_requests == 2


def test_a_429_with_a_long_retry_after_moves_to_the_next_target(tmp_path: Path, emulators: dict[str, Emulator]) -> None:
    openai = emulators["openai"].state
    openai.behaviour.fail_status, openai.behaviour.retry_after_s = 429, 30
    with running_gateway(tmp_path, resilient_config(emulators)) as gateway:
        key = gateway.new_key()
        alone = speak(gateway, key)
        assert alone.status_code == 502 and alone.headers["retry-after"] == "30"
        assert openai.synthesis_requests == 1  # not retried: the wait is longer than max_retry_after_s
        served = speak(gateway, key, models=["elevenlabs/eleven_turbo_v2_5"], voice="nova")
        assert served.status_code == 200, served.text
        assert served.headers["x-voxrouter-provider"] == "elevenlabs"
        assert [(a["provider"], a["outcome"], a.get("reason")) for a in last_usage(gateway)["attempts"]] == [
            ("openai", "failed", "rate_limited"),
            ("elevenlabs", "served", None),
        ]
        assert openai.synthesis_requests == 2


def test_a_connection_reset_mid_stream_ends_the_stream_cleanly_without_splicing(
    tmp_path: Path, emulators: dict[str, Emulator]
) -> None:
    openai = emulators["openai"].state
    with running_gateway(tmp_path, resilient_config(emulators)) as gateway:
        key = gateway.new_key()
        whole = speak(gateway, key, models=["elevenlabs/eleven_turbo_v2_5"])
        assert whole.status_code == 200
        openai.script = ["reset"]
        broken = speak(gateway, key, models=["elevenlabs/eleven_turbo_v2_5"])
        # Headers had gone: the response is the served provider's audio, cut short, and ends
        # as a well-formed chunked body; no other provider's audio is appended.
        assert broken.status_code == 200 and broken.headers["x-voxrouter-provider"] == "openai"
        assert 0 < len(broken.content) < len(whole.content)
        assert whole.content.startswith(broken.content)
        assert emulators["elevenlabs"].state.synthesis_requests == 0
        usage = last_usage(gateway)
        assert (usage["status"], usage["error_code"], usage["cost_micros"]) == (200, "upstream_error", 0)
        assert usage["attempts"] == [
            {"provider": "openai", "model": "tts-1", "voice": "alloy", "outcome": "failed", "reason": "mid_stream_unavailable"}
        ]
        whole_cost = query(gateway.settings.database_url, "SELECT SUM(cost_micros) FROM usage_records")[0][0]
        assert credits(gateway, key) == (CREDIT_MICROS - whole_cost, 0)


# --- circuit breakers ---------------------------------------------------------------------


def test_breaker_opens_refuses_without_calling_then_half_opens_on_a_free_probe_and_closes(
    tmp_path: Path, emulators: dict[str, Emulator]
) -> None:
    openai = emulators["openai"].state
    openai.behaviour.fail_status = 500
    with running_gateway(tmp_path, resilient_config(emulators, attempts=1, reset_timeout_s=1.0)) as gateway:
        key = gateway.new_key()
        for _ in range(3):
            assert speak(gateway, key).status_code == 502
        assert status_of(gateway, key, "openai") == {"id": "openai", "state": "unavailable", "reason": "circuit_open"}
        refused = speak(gateway, key)
        assert refused.status_code == 503 and refused.json()["error"] == "provider_unavailable"
        assert 1 <= int(refused.headers["retry-after"]) <= 1  # the time left until half-open, rounded up
        assert openai.synthesis_requests == 3  # the open circuit did not call the upstream
        assert last_usage(gateway)["attempts"] == [
            {"provider": "openai", "model": "tts-1", "voice": "alloy", "outcome": "skipped", "reason": "circuit_open"}
        ]
        assert credits(gateway, key) == (CREDIT_MICROS, 0)

        # Still failing once the wait is over: the probe (a free models listing) fails and the
        # circuit stays open; no synthesis is spent on finding that out.
        probes_before = sum(1 for r in openai.requests if r.path == "/v1/models")
        assert wait_for(lambda: sum(1 for r in openai.requests if r.path == "/v1/models") > probes_before, 4)
        assert status_of(gateway, key, "openai")["reason"] == "circuit_open"
        assert openai.synthesis_requests == 3

        openai.behaviour.fail_status = None  # the provider recovers
        assert wait_for(lambda: status_of(gateway, key, "openai").get("reason") == "circuit_half_open", 4)
        assert status_of(gateway, key, "openai") == {"id": "openai", "state": "degraded", "reason": "circuit_half_open"}
        assert speak(gateway, key).status_code == 200  # the trial call
        assert status_of(gateway, key, "openai") == {"id": "openai", "state": "available"}
        assert openai.synthesis_requests == 4


def test_a_failed_trial_reopens_the_circuit(tmp_path: Path, emulators: dict[str, Emulator]) -> None:
    openai = emulators["openai"].state
    openai.script = ["500", "500", "500", "500"]
    with running_gateway(tmp_path, resilient_config(emulators, attempts=1, reset_timeout_s=0.5)) as gateway:
        key = gateway.new_key()
        for _ in range(3):
            assert speak(gateway, key).status_code == 502
        time.sleep(0.6)  # the trial is due; the synthesis itself is the trial (models listing passes)
        assert speak(gateway, key).status_code == 502
        assert gateway.internals.health.circuit(gateway.internals.providers["openai"], "tts-1").state == "open"
        assert speak(gateway, key).status_code == 503


def test_the_clients_own_4xx_never_trips_the_breaker(tmp_path: Path, emulators: dict[str, Emulator]) -> None:
    with running_gateway(tmp_path, resilient_config(emulators, attempts=2)) as gateway:
        key = gateway.new_key()
        for _ in range(5):
            response = speak(gateway, key, voice="no-such-voice")
            assert response.status_code == 400 and response.json()["error"] == "invalid_body"
        calls = [r for r in emulators["openai"].state.requests if r.path == "/v1/audio/speech"]
        assert len(calls) == 5  # a 400 is not retried either
        assert status_of(gateway, key, "openai") == {"id": "openai", "state": "available"}
        assert speak(gateway, key).status_code == 200


def test_failures_below_the_threshold_show_degraded_then_a_success_clears_them(
    tmp_path: Path, emulators: dict[str, Emulator]
) -> None:
    openai = emulators["openai"].state
    openai.behaviour.fail_status = 500
    with running_gateway(tmp_path, resilient_config(emulators, attempts=1, fail_max=5)) as gateway:
        key = gateway.new_key()
        for _ in range(2):
            assert speak(gateway, key).status_code == 502
        assert status_of(gateway, key, "openai") == {"id": "openai", "state": "degraded"}
        openai.behaviour.fail_status = None
        assert speak(gateway, key).status_code == 200
        assert status_of(gateway, key, "openai") == {"id": "openai", "state": "available"}


def test_every_target_open_gives_503_with_the_time_to_half_open(tmp_path: Path, emulators: dict[str, Emulator]) -> None:
    for pid in ("openai", "elevenlabs"):
        emulators[pid].state.behaviour.fail_status = 500
    config = resilient_config(
        emulators, attempts=1, fail_max=1, reset_timeout_s=5, voice_map={"nova": {"elevenlabs": "21m00Tcm4TlvDq8ikWAM"}}
    )
    with running_gateway(tmp_path, config) as gateway:
        key = gateway.new_key()
        assert speak(gateway, key, voice="nova", models=["elevenlabs/eleven_turbo_v2_5"]).status_code == 502
        refused = speak(gateway, key, voice="nova", models=["elevenlabs/eleven_turbo_v2_5"])
        assert refused.status_code == 503 and refused.json()["error"] == "provider_unavailable"
        assert 4 <= int(refused.headers["retry-after"]) <= 5
        assert [a["reason"] for a in last_usage(gateway)["attempts"]] == ["circuit_open", "circuit_open"]


# --- fallback chains and voice mapping ------------------------------------------------------


def test_an_alias_chain_fails_over_with_its_voice_map_and_settles_once(tmp_path: Path, emulators: dict[str, Emulator]) -> None:
    emulators["openai"].state.behaviour.fail_status = 503
    alias = AliasSpec.model_validate(
        {
            "targets": [
                {"model": "openai/tts-1-hd"},
                {"model": "elevenlabs/eleven_turbo_v2_5", "voices": {"alloy": "EXAVITQu4vr4xnSDxMaL"}},
            ]
        }
    )
    config = resilient_config(emulators, aliases={"resilient": alias})
    with running_gateway(tmp_path, config) as gateway:
        key = gateway.new_key()
        response = speak(gateway, key, model="resilient")
        assert response.status_code == 200, response.text
        assert response.headers["x-voxrouter-provider"] == "elevenlabs"
        assert response.headers["x-voxrouter-model"] == "elevenlabs/eleven_turbo_v2_5"
        assert emulators["elevenlabs"].state.requests[-1].path.endswith("/EXAVITQu4vr4xnSDxMaL/stream")
        usage = last_usage(gateway)
        assert (usage["provider"], usage["model"]) == ("elevenlabs", "elevenlabs/eleven_turbo_v2_5")
        assert [(a["provider"], a["outcome"], a.get("reason")) for a in usage["attempts"]] == [
            ("openai", "failed", "unavailable"),
            ("openai", "failed", "unavailable"),
            ("elevenlabs", "served", None),
        ]
        # One hold for the dearest target (ElevenLabs' $0.05 vs tts-1-hd's $0.03 per 1K chars),
        # one commit for the provider that served.
        eleven = -(-len(TEXT) * 50_000 // 1000)
        assert ledger_kinds(gateway) == ["reserve", "commit"]
        assert usage["cost_micros"] == eleven
        assert credits(gateway, key) == (CREDIT_MICROS - eleven, 0)


def test_a_request_models_list_maps_the_voice_by_language_and_gender(tmp_path: Path, emulators: dict[str, Emulator]) -> None:
    emulators["openai"].state.behaviour.fail_status = 500
    with running_gateway(tmp_path, resilient_config(emulators, attempts=1)) as gateway:
        key = gateway.new_key()
        response = speak(gateway, key, voice="coral", models=["cartesia/sonic-2"])  # coral: English, female
        assert response.status_code == 200, response.text
        assert response.headers["x-voxrouter-provider"] == "cartesia"
        sent = emulators["cartesia"].state.requests[-1].body
        assert sent["voice"] == {"mode": "id", "id": "79a125e8-cd45-4c13-8a67-188112f4dd22"}  # the first English female
        male = speak(gateway, key, voice="echo", models=["cartesia/sonic-2"])
        assert male.status_code == 200
        assert emulators["cartesia"].state.requests[-1].body["voice"]["id"] == "a0e99841-438c-4a64-b679-ae501e7d6091"


def test_a_configured_voice_map_wins_over_catalog_matching(tmp_path: Path, emulators: dict[str, Emulator]) -> None:
    emulators["openai"].state.behaviour.fail_status = 500
    config = resilient_config(emulators, attempts=1, voice_map={"coral": {"cartesia": "694f9389-aac1-45b6-b726-9d9369183238"}})
    with running_gateway(tmp_path, config) as gateway:
        response = speak(gateway, gateway.new_key(), voice="coral", models=["cartesia/sonic-2"])
        assert response.status_code == 200
        assert emulators["cartesia"].state.requests[-1].body["voice"]["id"] == "694f9389-aac1-45b6-b726-9d9369183238"


def test_a_fallback_without_a_matching_voice_is_skipped_and_recorded(tmp_path: Path, emulators: dict[str, Emulator]) -> None:
    emulators["openai"].state.behaviour.fail_status = 500
    with running_gateway(tmp_path, resilient_config(emulators, attempts=1)) as gateway:
        key = gateway.new_key()
        response = speak(gateway, key, voice="alloy", models=["cartesia/sonic-2"])  # alloy: neutral; Cartesia has none
        assert response.status_code == 502 and response.json()["error"] == "upstream_error"
        assert [(a["provider"], a["outcome"], a.get("reason")) for a in last_usage(gateway)["attempts"]] == [
            ("openai", "failed", "unavailable"),
            ("cartesia", "skipped", "no_matching_voice"),
        ]
        assert emulators["cartesia"].state.synthesis_requests == 0
        assert credits(gateway, key) == (CREDIT_MICROS, 0)


def test_an_open_circuit_is_passed_over_for_the_next_target_at_once(tmp_path: Path, emulators: dict[str, Emulator]) -> None:
    openai = emulators["openai"].state
    openai.behaviour.fail_status = 500
    with running_gateway(tmp_path, resilient_config(emulators, attempts=1, fail_max=2, reset_timeout_s=30)) as gateway:
        key = gateway.new_key()
        for _ in range(2):
            speak(gateway, key)
        response = speak(gateway, key, voice="nova", models=["elevenlabs/eleven_turbo_v2_5"])
        assert response.status_code == 200 and response.headers["x-voxrouter-provider"] == "elevenlabs"
        assert openai.synthesis_requests == 2
        assert last_usage(gateway)["attempts"][0] == {
            "provider": "openai", "model": "tts-1", "voice": "nova", "outcome": "skipped", "reason": "circuit_open"
        }


def test_an_unusable_fallback_is_skipped_before_any_money_is_held(tmp_path: Path, emulators: dict[str, Emulator]) -> None:
    config = resilient_config(emulators)
    providers = dict(config.providers)
    providers["cartesia"] = providers["cartesia"].model_copy(update={"api_key": None})
    with running_gateway(tmp_path, config.model_copy(update={"providers": providers})) as gateway:
        key = gateway.new_key()
        response = speak(gateway, key, models=["cartesia/sonic-2"])
        assert response.status_code == 200
        assert last_usage(gateway)["attempts"] == [
            {"provider": "cartesia", "model": "sonic-2", "outcome": "skipped", "reason": "missing_api_key"},
            {"provider": "openai", "model": "tts-1", "voice": "alloy", "outcome": "served"},
        ]
        bad = speak(gateway, key, models=["nope/x"])
        assert bad.status_code == 400 and bad.json() == {"error": "invalid_model", "details": "unknown_provider: nope"}


def test_models_list_is_validated(gateway: Gateway, api_key: str) -> None:
    too_many = speak(gateway, api_key, models=[f"openai/tts-{i}" for i in range(9)])
    assert too_many.status_code == 400 and too_many.json()["error"] == "invalid_body"
    not_strings = speak(gateway, api_key, models=[1])
    assert not_strings.status_code == 400


@pytest.mark.parametrize("kind", ["500", "hang", "reset", "429"])
def test_no_slot_or_reservation_leaks_on_any_fault(tmp_path: Path, emulators: dict[str, Emulator], kind: str) -> None:
    emulators["openai"].state.script = [kind] * 4
    with running_gateway(tmp_path, resilient_config(emulators, attempts=2, fail_max=10)) as gateway:
        key = gateway.new_key(max_concurrency=1)
        key_id = query(gateway.settings.database_url, "SELECT id FROM api_keys")[0][0]
        speak(gateway, key)
        speak(gateway, key)
        assert gateway.internals.wallet.held == set()
        assert query(gateway.settings.database_url, "SELECT COUNT(*) FROM reservations WHERE state = 'held'")[0][0] == 0
        assert asyncio.run(gateway.internals.limits.slots_in_use(key_id)) == 0
        assert speak(gateway, key).status_code == 200  # the one slot is free again


def test_local_engines_break_one_by_one(emulators: dict[str, Emulator]) -> None:
    """A failing engine opens its own circuit; the other engines of the same provider stay up."""
    from voxrouter.providers import build_provider
    from voxrouter.providers.base import ErrorKind, ProviderError
    from voxrouter.router.catalog.routes import Catalog
    from voxrouter.router.resilience.health import HealthBoard

    config = resilient_config(emulators, fail_max=2, reset_timeout_s=30)
    local = build_provider("local", config.providers["local"])
    health = HealthBoard(config, {"local": local})
    catalog = Catalog(config, {"local": local}, health)
    for _ in range(2):
        health.circuit(local, "piper").admit().failed(ProviderError(ErrorKind.unavailable, "engine crashed", provider="local"))
    states = {s.id: (s.state, s.reason) for s in catalog.status()}
    assert states["local/piper"] == ("unavailable", "circuit_open")
    assert states["local/kokoro"] == ("available", None)
    # A full queue or missing weights say nothing about the engine's health.
    for kind in (ErrorKind.overloaded, ErrorKind.not_installed):
        health.circuit(local, "kokoro").admit().failed(ProviderError(kind, "busy", provider="local"))
    assert health.circuit(local, "kokoro").failures == 0
    asyncio.run(local.aclose())
