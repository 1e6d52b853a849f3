"""Per-key rate limits and concurrency slots, in memory and in a Redis shared by processes.

The Redis cases use the server at VOXROUTER_TEST_REDIS_URL (default 127.0.0.1:6379/0) and
are skipped, with the reason, where none answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import AsyncIterator, Callable

import pytest
import redis

from tests.databases import REDIS_URL, redis_unavailable
from tests.limit_support import FakeClock, drain
from voxrouter.router.limits.state import KeyLimits, LimitState, Slot, open_limit_state
from voxrouter.router.limits.state.memory import MemoryLimitState
from voxrouter.router.limits.state.redis import RedisLimitState

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Backend:
    """Opens states of one kind; Redis ones share a prefix nobody else uses, deleted afterwards."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.prefix = f"vrtest-{uuid.uuid4().hex[:12]}"
        self._states: list[LimitState] = []

    async def new(self, *, lease_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> LimitState:
        state: LimitState
        if self.kind == "memory":
            state = MemoryLimitState(lease_s, clock)
        else:
            state = await RedisLimitState.connect(REDIS_URL, lease_s=lease_s, prefix=self.prefix)
        self._states.append(state)
        return state

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(REDIS_URL, decode_responses=True)

    async def close(self) -> None:
        for state in self._states:
            await state.aclose()
        if self.kind == "redis":
            with self.redis() as client:
                keys = list(client.scan_iter(f"{self.prefix}:*"))
                if keys:
                    client.delete(*keys)


async def _open(kind: str) -> AsyncIterator[Backend]:
    if kind == "redis" and (reason := redis_unavailable()):
        pytest.skip(reason)
    backend = Backend(kind)
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    async for opened in _open(request.param):
        yield opened


@pytest.fixture
async def redis_backend() -> AsyncIterator[Backend]:
    async for opened in _open("redis"):
        yield opened




async def test_requests_per_minute_admits_the_limit_then_refuses_with_headers(backend):
    state = await backend.new()
    limits = KeyLimits(requests_per_minute=5)
    before = time.time()
    admitted = [await state.admit("k", limits) for _ in range(5)]
    assert all(a.allowed and a.reason is None and a.retry_after_s == 0 for a in admitted)
    assert [a.headers()["X-RateLimit-Remaining"] for a in admitted] == ["4", "3", "2", "1", "0"]
    for taken, a in enumerate(admitted, start=1):
        headers = a.headers()
        assert headers["X-RateLimit-Limit"] == "5" and "Retry-After" not in headers
        assert "X-RateLimit-Limit-Characters" not in headers
        # Full again `taken` requests' worth of refill (12 s each) from now, in unix seconds.
        assert before + 12 * taken - 1 <= int(headers["X-RateLimit-Reset"]) <= time.time() + 12 * taken + 1

    refused = await state.admit("k", limits)
    assert not refused.allowed and refused.reason == "rate_limited" and refused.slot is None
    assert refused.retry_after_s == pytest.approx(12.0, abs=0.5)
    headers = refused.headers()
    assert headers["Retry-After"] == "12" and headers["X-RateLimit-Remaining"] == "0"
    assert (await state.admit("other-key", limits)).headers()["X-RateLimit-Remaining"] == "4"


async def test_no_limits_admits_everything_and_sends_no_rate_headers(backend):
    state = await backend.new()
    for _ in range(3):
        admission = await state.admit("k", KeyLimits(), 10_000, take_slot=True)
        assert admission.allowed and admission.limit is None and admission.remaining is None
        assert admission.headers() == {} and isinstance(admission.slot, Slot)
        await admission.slot.release()
    assert abs(admission.reset_at - time.time()) <= 1
    with pytest.raises(ValueError):
        KeyLimits(requests_per_minute=-1)


async def test_redis_buckets_refill_with_the_server_clock(redis_backend):
    state = await redis_backend.new()
    limits = KeyLimits(requests_per_minute=600)  # ten a second
    assert 600 <= await drain(state, "k", limits) <= 610
    await asyncio.sleep(0.25)
    assert 2 <= await drain(state, "k", limits) <= 3


async def test_characters_per_minute(backend):
    clock = FakeClock()
    state = await backend.new(clock=clock)
    limits = KeyLimits(characters_per_minute=100)
    first = await state.admit("k", limits, 60)
    assert first.allowed and first.characters_remaining == 40 and first.limit is None
    assert first.headers() == {"X-RateLimit-Limit-Characters": "100", "X-RateLimit-Remaining-Characters": "40"}
    too_long = await state.admit("k", limits, 60)
    assert not too_long.allowed and too_long.reason == "rate_limited"
    assert too_long.retry_after_s == pytest.approx(12.0, abs=0.5)  # 20 characters at 100 a minute
    assert too_long.characters_remaining == 40
    fits = await state.admit("k", limits, 40)  # the refusal consumed nothing
    assert fits.allowed and fits.characters_remaining == 0

    # Longer than a minute's allowance: passes on a full bucket and leaves a debt.
    huge = await state.admit("k2", limits, 500)
    assert huge.allowed and huge.characters_remaining == 0
    for characters in (1, 0):
        refused = await state.admit("k2", limits, characters)
        assert not refused.allowed and refused.retry_after_s == pytest.approx((400 + characters) * 0.6, abs=0.5)
    if backend.kind == "memory":
        clock.now += 300  # the 500 characters paid back
        assert (await state.admit("k2", limits, 100)).allowed


async def test_a_refusal_consumes_nothing(backend):
    state = await backend.new()
    limits = KeyLimits(requests_per_minute=3, max_concurrency=1)
    held = await state.admit("k", limits, take_slot=True)
    assert held.allowed and held.remaining == 2
    busy = await state.admit("k", limits, take_slot=True)
    assert not busy.allowed and busy.reason == "concurrency_limited" and busy.slot is None
    assert busy.retry_after_s == 1.0 and busy.headers()["Retry-After"] == "1" and busy.remaining == 2
    await held.slot.release()
    assert (await state.admit("k", limits, take_slot=True)).remaining == 1  # the refused one took no token

    limits = KeyLimits(requests_per_minute=1, max_concurrency=5)
    assert (await state.admit("k2", limits, take_slot=True)).allowed
    refused = await state.admit("k2", limits, take_slot=True)
    assert refused.reason == "rate_limited" and refused.slot is None
    assert await state.slots_in_use("k2") == 1  # the rate refusal took no slot

    limits = KeyLimits(requests_per_minute=5, characters_per_minute=10)
    assert (await state.admit("k3", limits, 8)).remaining == 4
    refused = await state.admit("k3", limits, 5)
    assert refused.reason == "rate_limited" and refused.remaining == 4 and refused.characters_remaining == 2
    assert (await state.admit("k3", limits, 2)).remaining == 3  # the character refusal took no request


async def test_concurrency_slots(backend):
    state = await backend.new()
    limits = KeyLimits(max_concurrency=2)
    first, second = [await state.admit("k", limits, take_slot=True) for _ in range(2)]
    assert first.slot is not None and second.slot is not None
    assert first.headers() == {} and await state.slots_in_use("k") == 2
    third = await state.admit("k", limits, take_slot=True)
    assert third.reason == "concurrency_limited" and third.slot is None
    assert (await state.admit("other", limits, take_slot=True)).allowed  # per key
    assert (await state.admit("k", limits)).allowed  # without take_slot only the buckets count

    await first.slot.release()
    await first.slot.release()  # harmless: frees nothing more
    assert await state.slots_in_use("k") == 1
    again = await state.admit("k", limits, take_slot=True)
    assert again.allowed and await state.slots_in_use("k") == 2
    assert (await state.admit("k", limits, take_slot=True)).reason == "concurrency_limited"
    for admission in (second, again):
        await admission.slot.release()
    assert await state.slots_in_use("k") == 0


async def test_redis_slot_leases_expire_unless_renewed(redis_backend):
    owner = await redis_backend.new(lease_s=0.3)
    other = await redis_backend.new(lease_s=0.3)  # another process on the same Redis
    limits = KeyLimits(max_concurrency=1)
    held = await owner.admit("k", limits, take_slot=True)
    assert held.allowed
    for _ in range(5):  # 0.5 s, held by renewals
        await asyncio.sleep(0.1)
        await owner.renew()
        assert (await other.admit("k", limits, take_slot=True)).reason == "concurrency_limited"
    await asyncio.sleep(0.5)  # the owner "died": no renewals past one lease
    assert await other.slots_in_use("k") == 0
    taken = await other.admit("k", limits, take_slot=True)
    assert taken.allowed and await owner.slots_in_use("k") == 1
    await owner.renew()  # does not bring the expired slot back
    await held.slot.release()  # nor does releasing it free the new holder's
    assert await owner.slots_in_use("k") == 1
    await taken.slot.release()
    assert await owner.slots_in_use("k") == 0


_WORKER = r"""
import asyncio, json, sys

from voxrouter.router.limits.state import KeyLimits
from voxrouter.router.limits.state.redis import RedisLimitState
from tests.databases import REDIS_URL, redis_unavailable


async def main(url, prefix, mode):
    state = await RedisLimitState.connect(url, prefix=prefix)
    await state.admit("warm-up", KeyLimits(requests_per_minute=1))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if mode == "rate":
        limits = KeyLimits(requests_per_minute=30)
        results = await asyncio.gather(*(state.admit("burst", limits) for _ in range(40)))
        out = {"admitted": sum(a.allowed for a in results), "most_seen": 0}
    else:
        limits = KeyLimits(max_concurrency=5)

        async def hold():
            admission = await state.admit("busy", limits, take_slot=True)
            if not admission.allowed:
                return 0, 0
            seen = await state.slots_in_use("busy")
            await asyncio.sleep(0.3)
            await admission.slot.release()
            return 1, seen

        results = await asyncio.gather(*(hold() for _ in range(10)))
        out = {"admitted": sum(r[0] for r in results), "most_seen": max(r[1] for r in results)}
    await state.aclose()
    print(json.dumps(out), flush=True)


asyncio.run(main(*sys.argv[1:]))
"""


def _run_workers(prefix: str, mode: str, count: int = 3) -> list[dict[str, int]]:
    """`count` OS processes, each with its own RedisLimitState, released at once."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", _WORKER, REDIS_URL, prefix, mode]
    procs = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        for _ in range(count)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        return [json.loads(proc.communicate(timeout=20)[0]) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def test_redis_limits_hold_across_processes(redis_backend):
    results = _run_workers(redis_backend.prefix, "rate")
    # 30 in the bucket, plus half a token a second while the burst runs.
    assert 30 <= sum(r["admitted"] for r in results) <= 31, results

    results = _run_workers(redis_backend.prefix, "slots")
    assert sum(r["admitted"] for r in results) == 5, results
    assert max(r["most_seen"] for r in results) <= 5, results
    state = await redis_backend.new()
    assert await state.slots_in_use("busy") == 0


async def test_an_unreachable_redis_falls_back_to_memory(caplog):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    caplog.set_level(logging.WARNING, logger="voxrouter.limits")
    started = time.monotonic()
    state = await RedisLimitState.connect(f"redis://127.0.0.1:{port}/0", lease_s=1.0)
    try:
        limits = KeyLimits(requests_per_minute=5, max_concurrency=1)
        first = await state.admit("k", limits, take_slot=True)
        second = await state.admit("k", limits, take_slot=True)
        assert first.allowed and first.remaining == 4
        assert second.reason == "concurrency_limited"  # the fallback counts slots too
        await first.slot.release()  # in the fallback, where it was taken
        third = await state.admit("k", limits, take_slot=True)
        assert third.allowed and third.remaining == 3
        await third.slot.release()
        await state.renew()
        assert time.monotonic() - started < 2.0
    finally:
        await state.aclose()
    warnings = [r for r in caplog.records if r.name == "voxrouter.limits" and "unreachable" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]


async def test_redis_keys_expire_when_idle(redis_backend):
    state = await redis_backend.new(lease_s=2.0)
    limits = KeyLimits(requests_per_minute=60, characters_per_minute=600, max_concurrency=2)
    admission = await state.admit("k", limits, 300, take_slot=True)
    assert admission.allowed
    with redis_backend.redis() as client:
        prefix = redis_backend.prefix
        # Full again after 1 s (one request) and 30 s (300 of 600 characters), plus a margin;
        # +2 ms: the script's clock (TIME, in microseconds) and the key clock round apart.
        assert 1_000 < client.pttl(f"{prefix}:rl:k:req") <= 2_002
        assert 30_000 < client.pttl(f"{prefix}:rl:k:chr") <= 31_002
        assert 2_000 < client.pttl(f"{prefix}:slots:k") <= 3_002
        assert set(client.hgetall(f"{prefix}:rl:k:req")) == {"tokens", "ts"}
        await admission.slot.release()
        assert client.exists(f"{prefix}:slots:k") == 0


async def test_open_limit_state_picks_the_backend():
    memory = await open_limit_state(None, lease_s=5.0)
    assert isinstance(memory, MemoryLimitState)
    await memory.aclose()
    if redis_unavailable():
        return
    shared = await open_limit_state(REDIS_URL, lease_s=5.0)
    assert isinstance(shared, RedisLimitState) and shared.lease_s == 5.0
    await shared.aclose()
