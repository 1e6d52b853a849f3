"""Throughput of one gateway process against three sharing PostgreSQL and Redis.

    python bench/scale_out.py [--requests 3000] [--concurrency 90]

Starts the OpenAI emulator (short clips) and, for 1 and then 3 replicas, that many
`voxrouter serve` processes on loopback ports sharing a fresh PostgreSQL schema at
127.0.0.1:5432 and the Redis at 127.0.0.1:6379; spreads the requests round-robin over
them at the given concurrency and prints requests/s and TTFB, and the 3-vs-1 ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from overhead import EMULATOR_KEY, _free_port, _wait_ready  # noqa: E402

POSTGRES_URL = os.environ.get("VOXROUTER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("VOXROUTER_REDIS_URL", "redis://127.0.0.1:6379/0")


async def _drive(urls: list[str], key: str, requests: int, concurrency: int) -> tuple[float, list[float], list[int]]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    ttfbs: list[float] = []
    statuses: list[int] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                started = time.perf_counter()
                first = None
                body = {"model": "openai/tts-1", "voice": "alloy", "input": f"Scale out {i}."}
                async with client.stream("POST", urls[i % len(urls)] + "/v1/audio/speech", json=body) as response:
                    async for chunk in response.aiter_raw():
                        if first is None and chunk:
                            first = time.perf_counter() - started
                statuses.append(response.status_code)
                ttfbs.append(first or 0.0)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, ttfbs, statuses


def _schema(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def _round(replicas: int, args: argparse.Namespace, emulator_url: str, tmp: str) -> dict[str, float]:
    schema = f"vr_bench_{uuid.uuid4().hex[:10]}"
    _schema(f"CREATE SCHEMA {schema}")
    database_url = f"{POSTGRES_URL}?search_path={schema}"
    env = {
        **os.environ,
        "OPENAI_API_KEY": EMULATOR_KEY,
        "OPENAI_BASE_URL": emulator_url,
        "VOXROUTER_DATABASE_URL": database_url,
        "VOXROUTER_REDIS_URL": REDIS_URL,
        "VOXROUTER_REDIS_PREFIX": schema,
        "PYTHONPATH": str(ROOT),
    }
    procs: list[tuple[subprocess.Popen, str]] = []
    try:
        key = subprocess.run(
            [sys.executable, "-m", "voxrouter.cli", "admin", "create-key", "--org", "bench", "--name", "bench", "--credit-usd", "10000",
             "--requests-per-minute", "100000000", "--characters-per-minute", "1000000000"],
            env=env, capture_output=True, text=True, check=True,
        ).stdout.strip()
        for _ in range(replicas):
            port = _free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "voxrouter.cli", "serve", "--port", str(port), "--log-level", "warning"], env=env, cwd=tmp
            )
            procs.append((proc, f"http://127.0.0.1:{port}"))
        for proc, url in procs:
            _wait_ready(url + "/healthz", proc)
        urls = [url for _, url in procs]
        asyncio.run(_drive(urls, key, args.concurrency * 2, args.concurrency))  # warm connections and caches
        elapsed, ttfbs, statuses = asyncio.run(_drive(urls, key, args.requests, args.concurrency))
        ok = statuses.count(200)
        ttfbs.sort()
        return {"rps": args.requests / elapsed, "ok": ok, "p50": statistics.median(ttfbs) * 1000, "p99": ttfbs[int(len(ttfbs) * 0.99)] * 1000}
    finally:
        for proc, _ in procs:
            proc.terminate()
            proc.wait(timeout=10)
        _schema(f"DROP SCHEMA {schema} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=90)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="voxrouter-scale-")
    emu_port = _free_port()
    emulator = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "overhead.py"), "--serve-emulator", str(emu_port), "--first-byte-ms", "20", "--stream-ms", "20"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        _wait_ready(f"http://127.0.0.1:{emu_port}/v1/models", emulator)
        results = {n: _round(n, args, f"http://127.0.0.1:{emu_port}/v1", tmp) for n in (1, 3)}
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
    print(f"{args.requests} requests at concurrency {args.concurrency}, PostgreSQL + Redis shared, {os.cpu_count()} cores")
    print(f"{'replicas':>8} {'req/s':>8} {'200s':>6} {'TTFB p50':>10} {'TTFB p99':>10}")
    for n, r in results.items():
        print(f"{n:>8} {r['rps']:>8.1f} {int(r['ok']):>6} {r['p50']:>8.1f}ms {r['p99']:>8.1f}ms")
    print(f"3 replicas / 1 replica: {results[3]['rps'] / results[1]['rps']:.2f}x")


if __name__ == "__main__":
    main()
