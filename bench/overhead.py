"""What the gateway adds to time-to-first-byte and throughput.

    python bench/overhead.py [--requests 300] [--concurrency 1 64]

Starts the OpenAI emulator (a 2 s clip in 20 chunks, 50 ms to first byte) and a real
`voxrouter serve` on SQLite in front of it, each in its own process, then measures
TTFB and requests/s direct to the emulator and through the gateway (auth, reserve,
stream, commit) at each concurrency. Prints the figures and the added latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
EMULATOR_KEY = "bench-openai-key"
WARMUP_PER_WORKER = 5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_emulator(port: int, first_byte_s: float, stream_s: float) -> None:
    import uvicorn

    sys.path.insert(0, str(ROOT))
    from tests.emulators.behaviour import Behaviour, EmulatorState
    from tests.emulators.openai_emu import create_app

    behaviour = Behaviour(first_byte_delay_s=first_byte_s, audio_duration_s=2.0, stream_time_s=stream_s, chunks=20)
    state = EmulatorState(api_key=EMULATOR_KEY, behaviour=behaviour)
    uvicorn.run(create_app(state), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _wait_ready(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


async def _one(client: httpx.AsyncClient, url: str, headers: dict[str, str], body: dict) -> tuple[float, float]:
    started = time.perf_counter()
    ttfb = None
    async with client.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {response.status_code} {await response.aread()!r}")
        async for chunk in response.aiter_raw():
            if ttfb is None and chunk:
                ttfb = time.perf_counter() - started
    return ttfb or 0.0, time.perf_counter() - started


async def _run(url: str, headers: dict[str, str], body: dict, requests: int, concurrency: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        # Steady state only: the first waves at high concurrency queue on connection set-up
        # (client to gateway and gateway to upstream) and cold caches, so every worker runs
        # a few unrecorded requests first; then all start together.
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(requests):
            queue.put_nowait(i)
        ttfbs: list[float] = []
        warmed = 0
        all_warm = asyncio.Event()

        async def worker() -> None:
            nonlocal warmed
            for _ in range(WARMUP_PER_WORKER):
                await _one(client, url, headers, body)
            warmed += 1
            if warmed == concurrency:
                all_warm.set()
            await all_warm.wait()
            while not queue.empty():
                queue.get_nowait()
                ttfb, _ = await _one(client, url, headers, body)
                ttfbs.append(ttfb)

        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await all_warm.wait()
        started = time.perf_counter()
        await asyncio.gather(*workers)
        elapsed = time.perf_counter() - started
    ttfbs.sort()
    return {
        "p50_ms": statistics.median(ttfbs) * 1000,
        "p99_ms": ttfbs[min(len(ttfbs) - 1, int(len(ttfbs) * 0.99))] * 1000,
        "rps": requests / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--first-byte-ms", type=float, default=50)
    parser.add_argument("--stream-ms", type=float, default=500, help="wall time to stream the 20 chunks")
    parser.add_argument("--serve-emulator", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_emulator:
        serve_emulator(args.serve_emulator, args.first_byte_ms / 1000, args.stream_ms / 1000)
        return

    tmp = tempfile.mkdtemp(prefix="voxrouter-bench-")
    emu_port, gw_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "VOXROUTER_DATABASE_URL": f"sqlite:///{tmp}/bench.db",
        "OPENAI_API_KEY": EMULATOR_KEY,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{emu_port}/v1",
        "PYTHONPATH": str(ROOT),
    }
    emulator = subprocess.Popen(
        [sys.executable, __file__, "--serve-emulator", str(emu_port), "--first-byte-ms", str(args.first_byte_ms), "--stream-ms", str(args.stream_ms)],
        env=env,
    )
    gateway = subprocess.Popen(
        [sys.executable, "-m", "router.cli", "serve", "--port", str(gw_port), "--log-level", "warning"], env=env, cwd=tmp
    )
    try:
        key = subprocess.run(
            [sys.executable, "-m", "router.cli", "admin", "create-key", "--org", "bench", "--name", "bench", "--credit-usd", "1000"],
            env=env, capture_output=True, text=True, check=True,
        ).stdout.strip()
        _wait_ready(f"http://127.0.0.1:{emu_port}/v1/models", emulator)
        _wait_ready(f"http://127.0.0.1:{gw_port}/v1/status", gateway)
        body = {"model": "openai/tts-1", "voice": "alloy", "input": "The quick brown fox jumps over the lazy dog.", "response_format": "mp3"}
        direct = (f"http://127.0.0.1:{emu_port}/v1/audio/speech", {"Authorization": f"Bearer {EMULATOR_KEY}"})
        routed = (f"http://127.0.0.1:{gw_port}/v1/audio/speech", {"Authorization": f"Bearer {key}"})
        print(f"clip 2 s in 20 chunks, first byte {args.first_byte_ms:g} ms, streamed over {args.stream_ms:g} ms; {args.requests} requests per run")
        print(f"{'concurrency':>11} {'path':>8} {'TTFB p50':>10} {'TTFB p99':>10} {'req/s':>8}")
        for concurrency in args.concurrency:
            base = asyncio.run(_run(*direct, {**body, "model": "tts-1"}, args.requests, concurrency))
            gw = asyncio.run(_run(*routed, body, args.requests, concurrency))
            for name, r in (("direct", base), ("gateway", gw)):
                print(f"{concurrency:>11} {name:>8} {r['p50_ms']:>8.2f}ms {r['p99_ms']:>8.2f}ms {r['rps']:>8.1f}")
            print(
                f"{concurrency:>11} {'added':>8} {gw['p50_ms'] - base['p50_ms']:>+8.2f}ms {gw['p99_ms'] - base['p99_ms']:>+8.2f}ms"
                f" {gw['rps'] / base['rps']:>7.2f}x"
            )
    finally:
        for proc in (gateway, emulator):
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
