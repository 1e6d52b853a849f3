"""What the gateway adds to time-to-first-byte and throughput, and what its limiter and
circuit breakers add on top.

    python bench/overhead.py [--requests 300] [--concurrency 1 64] [--rounds 3]

Starts the OpenAI emulator (a 2 s clip in 20 chunks, 50 ms to first byte) and three real
`voxrouter serve` processes on SQLite in front of it: `bare` (limiter and breakers off),
`memory` (both on, as shipped) and `redis` (both on, limits in the Redis at
127.0.0.1:6379; skipped when unreachable). Runs are interleaved round by round so that
machine noise hits every variant alike; prints medians of TTFB and requests/s, the
gateway's own overhead over direct, and the limiter + breaker overhead over `bare`
(budget: 1 ms p50 in memory, 2 ms with Redis).
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


def _variant_config(tmp: str, name: str, limits_and_breakers: bool) -> str:
    """The shipped config, with the limiter and breakers on (as shipped) or off (the baseline)."""
    sys.path.insert(0, str(ROOT))
    import yaml

    from voxrouter.router.config import load_config

    config = load_config()
    if not limits_and_breakers:
        resilience = config.resilience.model_copy(
            update={"breaker": config.resilience.breaker.model_copy(update={"enabled": False})}
        )
        config = config.model_copy(
            update={"limits": config.limits.model_copy(update={"enabled": False}), "resilience": resilience}
        )
    path = Path(tmp) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    return str(path)


async def _hot_path_us(redis_url: str | None, calls: int = 2000) -> dict[str, float]:
    """Median microseconds per request for the limiter's admission + release and a breaker
    ticket, called in this process the way the request path calls them."""
    sys.path.insert(0, str(ROOT))
    from voxrouter.providers.spec import BreakerSpec
    from voxrouter.router.limits.state import KeyLimits, open_limit_state
    from voxrouter.router.resilience.breaker import Circuit

    limits = KeyLimits(requests_per_minute=10**9, characters_per_minute=10**12, max_concurrency=1000)
    out: dict[str, float] = {}
    circuit = Circuit("bench", BreakerSpec())
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        circuit.admit().succeeded()
        samples.append(time.perf_counter() - started)
    out["breaker"] = statistics.median(samples) * 1e6
    for name, url in (("memory", None), ("redis", redis_url)):
        if name == "redis" and url is None:
            continue
        state = await open_limit_state(url, lease_s=30, prefix=f"vrbench{os.getpid()}")
        try:
            samples = []
            for i in range(calls):
                started = time.perf_counter()
                admission = await state.admit(f"key{i % 10}", limits, 44, take_slot=True)
                assert admission.slot is not None
                await admission.slot.release()
                samples.append(time.perf_counter() - started)
            out[name] = statistics.median(samples) * 1e6
        finally:
            await state.aclose()
    return out


def _redis_reachable(url: str) -> bool:
    try:
        import redis

        with redis.Redis.from_url(url, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except Exception:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs per variant; medians are reported")
    parser.add_argument("--first-byte-ms", type=float, default=50)
    parser.add_argument("--stream-ms", type=float, default=500, help="wall time to stream the 20 chunks")
    parser.add_argument("--redis-url", default=os.environ.get("VOXROUTER_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--serve-emulator", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_emulator:
        serve_emulator(args.serve_emulator, args.first_byte_ms / 1000, args.stream_ms / 1000)
        return

    tmp = tempfile.mkdtemp(prefix="voxrouter-bench-")
    emu_port = _free_port()
    base_env = {
        **os.environ,
        "OPENAI_API_KEY": EMULATOR_KEY,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{emu_port}/v1",
        "PYTHONPATH": str(ROOT),
    }
    base_env.pop("VOXROUTER_REDIS_URL", None)
    # Three gateways side by side: no limiter or breakers (baseline), both in memory, both with Redis.
    variants = {
        "bare": {"VOXROUTER_CONFIG": _variant_config(tmp, "bare", False)},
        "memory": {"VOXROUTER_CONFIG": _variant_config(tmp, "memory", True)},
    }
    if _redis_reachable(args.redis_url):
        variants["redis"] = {
            "VOXROUTER_CONFIG": variants["memory"]["VOXROUTER_CONFIG"],
            "VOXROUTER_REDIS_URL": args.redis_url,
            "VOXROUTER_REDIS_PREFIX": f"vrbench{os.getpid()}",
        }
    else:
        print(f"Redis at {args.redis_url} unreachable: the redis variant is skipped")
    emulator = subprocess.Popen(
        [sys.executable, __file__, "--serve-emulator", str(emu_port), "--first-byte-ms", str(args.first_byte_ms), "--stream-ms", str(args.stream_ms)],
        env=base_env,
    )
    gateways: dict[str, tuple[subprocess.Popen, str, str]] = {}
    try:
        for name, extra in variants.items():
            port = _free_port()
            env = {**base_env, **extra, "VOXROUTER_DATABASE_URL": f"sqlite:///{tmp}/{name}.db"}
            proc = subprocess.Popen(
                [sys.executable, "-m", "voxrouter.cli", "serve", "--port", str(port), "--log-level", "warning"], env=env, cwd=tmp
            )
            key = subprocess.run(
                [sys.executable, "-m", "voxrouter.cli", "admin", "create-key", "--org", "bench", "--name", "bench",
                 "--credit-usd", "1000", "--requests-per-minute", "100000000", "--characters-per-minute", "1000000000"],
                env=env, capture_output=True, text=True, check=True,
            ).stdout.strip()
            gateways[name] = (proc, f"http://127.0.0.1:{port}", key)
        _wait_ready(f"http://127.0.0.1:{emu_port}/v1/models", emulator)
        for proc, url, _ in gateways.values():
            _wait_ready(f"{url}/v1/status", proc)
        body = {"model": "openai/tts-1", "voice": "alloy", "input": "The quick brown fox jumps over the lazy dog.", "response_format": "mp3"}
        print(
            f"clip 2 s in 20 chunks, first byte {args.first_byte_ms:g} ms, streamed over {args.stream_ms:g} ms;"
            f" {args.requests} requests per run, {args.rounds} interleaved rounds, medians shown"
        )
        hot = asyncio.run(_hot_path_us(args.redis_url if "redis" in variants else None))
        print(
            "hot path in process, median per request: breaker ticket {:.1f} µs, limiter admit+release in memory {:.1f} µs{}".format(
                hot["breaker"], hot["memory"], f", in Redis {hot['redis']:.1f} µs (two round trips)" if "redis" in hot else ""
            )
        )
        print(f"{'concurrency':>11} {'path':>8} {'TTFB p50':>10} {'TTFB p99':>10} {'req/s':>8}")
        for concurrency in args.concurrency:
            runs: dict[str, list[dict[str, float]]] = {"direct": [], **{name: [] for name in gateways}}
            for _ in range(args.rounds):
                runs["direct"].append(
                    asyncio.run(_run(f"http://127.0.0.1:{emu_port}/v1/audio/speech", {"Authorization": f"Bearer {EMULATOR_KEY}"},
                                     {**body, "model": "tts-1"}, args.requests, concurrency))
                )
                for name, (_, url, key) in gateways.items():
                    runs[name].append(asyncio.run(_run(f"{url}/v1/audio/speech", {"Authorization": f"Bearer {key}"}, body, args.requests, concurrency)))
            medians = {name: {m: statistics.median(r[m] for r in rs) for m in ("p50_ms", "p99_ms", "rps")} for name, rs in runs.items()}
            for name, r in medians.items():
                print(f"{concurrency:>11} {name:>8} {r['p50_ms']:>8.2f}ms {r['p99_ms']:>8.2f}ms {r['rps']:>8.1f}")
            bare = medians["bare"]
            print(f"{concurrency:>11} {'gateway':>8} {bare['p50_ms'] - medians['direct']['p50_ms']:>+8.2f}ms added by the bare gateway (p50)")
            for name in ("memory", "redis"):
                if name in medians:
                    added = medians[name]["p50_ms"] - bare["p50_ms"]
                    budget = 1.0 if name == "memory" else 2.0
                    verdict = "within" if added <= budget else "OVER"
                    print(
                        f"{concurrency:>11} {name:>8} {added:>+8.2f}ms p50 for limiter + breaker"
                        f" ({verdict} the {budget:g} ms budget), {medians[name]['rps'] / bare['rps']:.2f}x throughput"
                    )
    finally:
        for proc, _, _ in gateways.values():
            proc.terminate()
            proc.wait(timeout=10)
        emulator.terminate()
        emulator.wait(timeout=10)


if __name__ == "__main__":
    main()
