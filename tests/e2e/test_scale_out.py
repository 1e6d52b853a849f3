"""Scale-out on one machine: three `voxrouter serve` processes sharing the PostgreSQL at
127.0.0.1:5432 and the Redis at 127.0.0.1:6379, 3,000 speech requests spread over them at
concurrency 90. One global rate limit holds, the wallet reconciles to the micro-dollar, and
the three processes' metrics add up to the requests sent."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Emulator, emulated_config
from tests.databases import REDIS_URL, delete_redis_prefix, fresh_database, postgres_unavailable, query, redis_unavailable
from tests.processes import GatewayProcess, write_config
from voxrouter.router.server_commands import create_key
from voxrouter.router.settings import Settings

REQUESTS = 3_000
CONCURRENCY = 90
RPM = 1_000
CREDIT_MICROS = 100_000_000

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(bool(postgres_unavailable()), reason=postgres_unavailable() or ""),
    pytest.mark.skipif(bool(redis_unavailable()), reason=redis_unavailable() or ""),
]


async def _spread(urls: list[str], key: str) -> list[int]:
    statuses: list[int] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(REQUESTS):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY, keepalive_expiry=2.0)  # < uvicorn's 5 s
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                body = {"model": "openai/tts-1", "voice": "alloy", "input": f"Scale out {i}."}
                response = await client.post(urls[i % len(urls)] + "/v1/audio/speech", json=body)
                statuses.append(response.status_code)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return statuses


def _requests_counted(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "voxrouter_requests_total"
    )


def test_three_replicas_share_limits_wallet_and_add_up_metrics(tmp_path: Path, emulators: dict[str, Emulator]) -> None:
    for emulator in emulators.values():
        emulator.state.reset(first_byte_delay_s=0.005, stream_time_s=0.01, chunks=2, audio_duration_s=0.2)
    prefix = f"vrscale{uuid.uuid4().hex[:8]}"
    config_path = write_config(emulated_config(emulators), tmp_path / "config.yaml")
    with fresh_database("postgres", tmp_path) as database_url:
        key = asyncio.run(
            create_key(Settings(database_url=database_url), "scale", "key", CREDIT_MICROS, requests_per_minute=RPM, max_concurrency=CONCURRENCY)
        )
        env = {"VOXROUTER_REDIS_URL": REDIS_URL, "VOXROUTER_REDIS_PREFIX": prefix}
        replicas = [GatewayProcess(config_path, database_url, tmp_path / f"gw{i}.log", env=env) for i in range(3)]
        try:
            for replica in replicas:
                replica.start()
            urls = [replica.url for replica in replicas]
            started = time.monotonic()
            statuses = asyncio.run(_spread(urls, key))
            elapsed = time.monotonic() - started
            print(f"\n{REQUESTS} requests over 3 replicas in {elapsed:.1f}s: {sorted(set(statuses))}")

            assert len(statuses) == REQUESTS
            assert set(statuses) <= {200, 429}, sorted(set(statuses))
            admitted = statuses.count(200)
            assert RPM <= admitted <= RPM + elapsed * RPM / 60 + 1, (admitted, elapsed)

            # The wallet: every admitted request charged once, nothing held, ledger and usage agree.
            (balance, reserved), = query(database_url, "SELECT balance_micros, reserved_micros FROM wallets")
            (charged, served), = query(
                database_url, "SELECT COALESCE(SUM(cost_micros), 0), COUNT(*) FROM usage_records WHERE status = 200"
            )
            (committed,) = query(database_url, "SELECT COALESCE(-SUM(micros_delta), 0) FROM ledger WHERE kind = 'commit'")[0]
            assert reserved == 0 and served == admitted
            assert CREDIT_MICROS - balance == charged == committed
            assert query(database_url, "SELECT COUNT(*) FROM usage_records WHERE status = 429")[0][0] == REQUESTS - admitted

            # Each replica counts what it answered; together, every request sent.
            counted = [_requests_counted(url) for url in urls]
            assert all(n > 0 for n in counted) and sum(counted) == REQUESTS, counted
        finally:
            for replica in replicas:
                replica.stop()
            delete_redis_prefix(prefix)
