"""Two gateway processes on one PostgreSQL database spend one wallet: together they admit
exactly what it covers, and the ledger balances to the micro-dollar."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from tests.conftest import emulated_config
from tests.databases import fresh_database, postgres_unavailable, query
from tests.processes import GatewayProcess, write_config
from voxrouter.providers.spec import estimate_cost_micros
from voxrouter.router.server_commands import create_key
from voxrouter.router.settings import Settings

pytestmark = pytest.mark.skipif(bool(postgres_unavailable()), reason=postgres_unavailable() or "")

TEXT = "x" * 100
COST = estimate_cost_micros(len(TEXT), 15_000)  # openai/tts-1
COVERED = 100
REQUESTS = 500
CREDIT = COVERED * COST + COST - 1  # 100 requests and not quite a 101st


def _ledger_sums(url: str, org_id: str) -> dict[str, tuple[int, int]]:
    rows = query(url, "SELECT kind, COUNT(*), COALESCE(SUM(micros_delta), 0) FROM ledger WHERE org_id = ? GROUP BY kind", org_id)
    return {kind: (int(count), int(total)) for kind, count, total in rows}


async def _fire(urls: list[str], key: str) -> list[tuple[int, str | None, int]]:
    """REQUESTS concurrent requests, alternating between the replicas: (status, error code, body size)."""
    body = {"model": "openai/tts-1", "voice": "alloy", "input": TEXT, "response_format": "pcm"}
    limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60, limits=limits) as client:

        async def one(i: int) -> tuple[int, str | None, int]:
            response = await client.post(urls[i % len(urls)] + "/v1/audio/speech", json=body)
            code = None
            if response.status_code != 200:
                try:
                    code = response.json()["error"]
                except (ValueError, KeyError, TypeError):
                    code = response.text[:200]
            return response.status_code, code, len(response.content)

        return await asyncio.gather(*(one(i) for i in range(REQUESTS)))


def test_two_replicas_share_one_wallet_without_overspending(emulators, tmp_path):
    config_path = write_config(emulated_config(emulators), tmp_path / "config.yaml")
    state = emulators["openai"].state
    state.reset(stream_time_s=0.3, audio_duration_s=0.2)  # long enough for the admitted ones to overlap
    with fresh_database("postgres", tmp_path) as db:
        org = f"replicas-{uuid.uuid4().hex[:8]}"
        key = asyncio.run(create_key(Settings(database_url=db), org, "replicas", CREDIT))
        org_id = query(db, "SELECT id FROM orgs WHERE name = ?", org)[0][0]
        a = GatewayProcess(config_path, db, tmp_path / "a.log")
        b = GatewayProcess(config_path, db, tmp_path / "b.log")
        with a, b:
            a.start()
            b.start()
            started = time.monotonic()
            results = asyncio.run(_fire([a.url, b.url], key))
            elapsed = time.monotonic() - started
            statuses = [status for status, _, _ in results]
            logs = f"\n--- a ---\n{a.log()}\n--- b ---\n{b.log()}"
            assert not [s for s in statuses if s >= 500], (sorted(set(statuses)), logs)
            assert statuses.count(200) == COVERED, (sorted(set(statuses)), logs)
            assert statuses.count(402) == REQUESTS - COVERED, sorted(set(statuses))
            assert {code for status, code, _ in results if status == 402} == {"insufficient_credit"}
            assert all(size == 9_600 for status, _, size in results if status == 200)
            assert state.synthesis_requests == COVERED  # a refused request never reaches the upstream
            # Request i went to replica i % 2: each replica admitted some and refused some.
            admitted = [sum(1 for i, (s, _, _) in enumerate(results) if s == 200 and i % 2 == r) for r in (0, 1)]
            assert all(0 < n < REQUESTS // 2 for n in admitted), admitted
            credits = httpx.get(a.url + "/v1/credits", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
            assert credits == httpx.get(b.url + "/v1/credits", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()

        assert credits == {"balanceMicros": CREDIT - COVERED * COST, "reservedMicros": 0}
        assert credits["balanceMicros"] >= 0
        balance, reserved = query(db, "SELECT balance_micros, reserved_micros FROM wallets WHERE org_id = ?", org_id)[0]
        assert (int(balance), int(reserved)) == (CREDIT - COVERED * COST, 0)
        sums = _ledger_sums(db, org_id)
        assert sums["topup"] == (1, CREDIT)
        assert sums["reserve"] == (COVERED, -COVERED * COST)
        assert sums["commit"] == (COVERED, -COVERED * COST)
        assert "refund" not in sums
        assert int(balance) == sums["topup"][1] + sums["commit"][1]
        states = query(db, "SELECT state, COUNT(*) FROM reservations WHERE org_id = ? GROUP BY state", org_id)
        assert {s: int(n) for s, n in states} == {"committed": COVERED}
        usage = query(
            db, "SELECT status, error_code, COUNT(*), SUM(cost_micros) FROM usage_records WHERE org_id = ? GROUP BY status, error_code", org_id
        )
        assert {(int(s), code): (int(n), int(c)) for s, code, n, c in usage} == {
            (200, None): (COVERED, COVERED * COST),
            (402, "insufficient_credit"): (REQUESTS - COVERED, 0),
        }
        print(f"{REQUESTS} requests over two replicas in {elapsed:.2f}s; admitted per replica: {admitted}")
