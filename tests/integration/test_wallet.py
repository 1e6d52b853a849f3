"""The wallet never loses or invents a micro-dollar, under concurrency and failure."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid

import anyio
import httpx
import pytest

from tests.audio_checks import decoded_duration_s
from tests.databases import query
from voxrouter.providers.spec import estimate_cost_micros
from voxrouter.router.billing.wallet import InsufficientCredit, SpendLimitExceeded, Wallet, spend_limits
from voxrouter.router.store import open_store
from voxrouter.router.store.base import NewApiKeyRecord, UsageStart

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _ledger_sums(database_url: str, org_name: str) -> dict[str, tuple[int, int]]:
    rows = query(
        database_url,
        "SELECT l.kind, COUNT(*), COALESCE(SUM(l.micros_delta), 0) FROM ledger l JOIN orgs o ON o.id = l.org_id"
        " WHERE o.name = ? GROUP BY l.kind",
        org_name,
    )
    return {kind: (int(count), int(total)) for kind, count, total in rows}


async def test_200_concurrent_requests_against_a_wallet_for_50(gateway, emulators):
    text = "x" * 100
    cost = estimate_cost_micros(len(text), 15_000)  # openai/tts-1
    assert cost == 1_500
    credit = 50 * cost + cost // 2  # 50 and a half requests' worth
    org = f"race-{time.time_ns()}"
    key = await anyio.to_thread.run_sync(lambda: gateway.new_key(credit / 1_000_000, org))
    emulators["openai"].state.behaviour.stream_time_s = 0.2
    emulators["openai"].state.behaviour.audio_duration_s = 0.2
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "openai/tts-1", "voice": "alloy", "input": text, "response_format": "pcm"}
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=60, limits=limits) as client:

        async def one() -> tuple[int, int]:
            response = await client.post("/v1/audio/speech", json=body)
            return response.status_code, len(response.content)

        results = await asyncio.gather(*(one() for _ in range(200)))
        statuses = [status for status, _ in results]
        assert statuses.count(200) == 50, sorted(set(statuses))
        assert statuses.count(402) == 150
        assert all(size == 9_600 for status, size in results if status == 200)
        credits = (await client.get("/v1/credits")).json()
    assert credits == {"balanceMicros": credit - 50 * cost, "reservedMicros": 0}
    sums = _ledger_sums(gateway.settings.database_url, org)
    assert sums["topup"] == (1, credit)
    assert sums["reserve"] == (50, -50 * cost)
    assert sums["commit"] == (50, -50 * cost)
    assert "refund" not in sums
    assert credits["balanceMicros"] == sums["topup"][1] + sums["commit"][1]


def test_activity_is_newest_first_in_wire_shape(gateway, api_key):
    headers = {"Authorization": f"Bearer {api_key}"}
    httpx.post(gateway.url + "/v1/audio/speech", json={"model": "openai/tts-1", "voice": "alloy", "input": "abc"}, headers=headers)
    rows = httpx.get(gateway.url + "/v1/credits/activity?limit=10", headers=headers).json()
    assert [r["kind"] for r in rows] == ["commit", "reserve", "topup"]
    assert rows[0]["microsDelta"] == -45 and rows[0]["microsBalanceAfter"] == 5_000_000 - 45
    assert rows[1]["microsDelta"] == -45 and rows[1]["microsBalanceAfter"] == 5_000_000
    assert rows[2] == {**rows[2], "kind": "topup", "microsDelta": 5_000_000, "microsBalanceAfter": 5_000_000, "source": "admin"}
    assert set(rows[0]) == {"createdAt", "kind", "microsDelta", "microsBalanceAfter", "source"}
    assert len(httpx.get(gateway.url + "/v1/credits/activity?limit=1", headers=headers).json()) == 1
    for bad in ("0", "101", "ten"):
        response = httpx.get(gateway.url + f"/v1/credits/activity?limit={bad}", headers=headers)
        assert response.status_code == 400 and response.json()["error"] == "invalid_body"


def test_client_disconnect_cancels_upstream_and_charges(gateway, emulators, api_key):
    state = emulators["openai"].state
    state.behaviour.stream_time_s = 3.0
    state.behaviour.chunks = 30
    headers = {"Authorization": f"Bearer {api_key}"}
    body = {"model": "openai/tts-1", "voice": "alloy", "input": "Bye now.", "response_format": "pcm"}
    with httpx.stream("POST", gateway.url + "/v1/audio/speech", json=body, headers=headers, timeout=10) as response:
        assert response.status_code == 200
        next(response.iter_raw())
    deadline = time.monotonic() + 3
    while state.cancelled == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert state.cancelled == 1 and state.completed == 0
    credits = httpx.get(gateway.url + "/v1/credits", headers=headers).json()
    assert credits == {"balanceMicros": 5_000_000 - estimate_cost_micros(8, 15_000), "reservedMicros": 0}


@pytest.mark.parametrize(
    "model, voice, fmt",
    [
        ("openai/tts-1", "alloy", "pcm"),  # passed through
        ("elevenlabs/eleven_turbo_v2_5", "21m00Tcm4TlvDq8ikWAM", "flac"),  # transcoded from pcm
        ("cartesia/sonic-2", "a0e99841-438c-4a64-b679-ae501e7d6091", "opus"),  # transcoded from pcm
    ],
)
def test_connection_reset_mid_stream_ends_cleanly_and_refunds(gateway, emulators, api_key, model, voice, fmt):
    emulators[model.split("/")[0]].state.behaviour.reset_after_chunks = 3
    headers = {"Authorization": f"Bearer {api_key}"}
    body = {"model": model, "voice": voice, "input": "Break.", "response_format": fmt}
    response = httpx.post(gateway.url + "/v1/audio/speech", json=body, headers=headers, timeout=10)
    assert response.status_code == 200  # headers were sent before the upstream broke
    # What arrived is a shorter clip that decodes to its end, not a corrupt tail.
    assert 0.1 < decoded_duration_s(response.content, fmt) < 0.5
    credits = httpx.get(gateway.url + "/v1/credits", headers=headers).json()
    assert credits == {"balanceMicros": 5_000_000, "reservedMicros": 0}


def _usage(org_id: str) -> UsageStart:
    return UsageStart(request_id=f"req_{uuid.uuid4().hex}", org_id=org_id, key_id=None, provider="p", model="p/m", characters=3)


async def test_settlement_happens_exactly_once(database_url):
    store = await open_store(database_url)
    try:
        org = await store.ensure_org("acme")
        await store.topup(org, 1_000, "admin")
        wallet = Wallet(store, lease_s=60)
        reservation = await wallet.reserve(_usage(org), 600)
        with pytest.raises(InsufficientCredit):
            await wallet.reserve(_usage(org), 401)
        await reservation.commit(250)
        with pytest.raises(RuntimeError):
            await reservation.refund()
        assert await store.settle(reservation.id, None, "again", None) is False
        assert await store.settle(reservation.id, 600, "again", None) is False
        snap = await wallet.snapshot(org)
        assert (snap.balance_micros, snap.reserved_micros) == (750, 0)
        over = await wallet.reserve(_usage(org), 700)
        await over.commit(10_000)  # a charge never exceeds its hold
        assert (await wallet.snapshot(org)).balance_micros == 50
        assert wallet.held == set()
    finally:
        await store.close()


async def test_sweeper_refunds_only_holds_whose_process_stopped_renewing(database_url):
    store = await open_store(database_url)
    try:
        org = await store.ensure_org("acme")
        await store.topup(org, 1_000, "admin")
        crashed = Wallet(store, lease_s=0.05)  # reserves, then never renews: a killed process
        live = Wallet(store, lease_s=0.05)
        await crashed.reserve(_usage(org), 300)
        alive = await live.reserve(_usage(org), 200)
        await asyncio.sleep(0.1)
        await live.renew()
        assert await live.sweep_expired() == 1
        snap = await live.snapshot(org)
        assert (snap.balance_micros, snap.reserved_micros) == (1_000, 200)
        await asyncio.sleep(0.1)  # expired again, but this process still owns it
        assert await live.sweep_expired() == 0
        await alive.commit(200)
        assert await live.sweep_expired() == 0
        assert (await live.snapshot(org)).balance_micros == 800
    finally:
        await store.close()


async def test_spend_caps_hold_estimates_and_settle_to_actual(database_url):
    store = await open_store(database_url)
    try:
        org = await store.ensure_org("acme")
        await store.topup(org, 10_000, "admin")
        wallet = Wallet(store, lease_s=60)
        key = await store.create_api_key(NewApiKeyRecord(org_id=org, name="capped", key_hash="h" * 64, key_suffix="abcd"))
        limits = spend_limits(key.id, 1_000, 1_500)
        first = await wallet.reserve(_usage(org), 800, limits)
        with pytest.raises(SpendLimitExceeded) as daily:
            await wallet.reserve(_usage(org), 300, limits)
        assert daily.value.period == "daily"
        await first.commit(500)  # the cap counts what was charged, not the estimate
        second = await wallet.reserve(_usage(org), 500, limits)
        await second.refund()
        with pytest.raises(SpendLimitExceeded) as monthly:
            await wallet.reserve(_usage(org), 1_001, spend_limits(key.id, None, 1_500))
        assert monthly.value.period == "monthly"
        later = dt.datetime(2099, 1, 2, tzinfo=dt.timezone.utc)  # a new day and a new month
        tomorrow = spend_limits(key.id, 1_000, 1_500, later)
        with pytest.raises(SpendLimitExceeded):
            await wallet.reserve(_usage(org), 1_001, tomorrow)
        other_month = await wallet.reserve(_usage(org), 1_000, tomorrow)
        await other_month.commit(1_000)
        assert (await wallet.snapshot(org)).balance_micros == 10_000 - 500 - 1_000
        assert wallet.held == set()
    finally:
        await store.close()
