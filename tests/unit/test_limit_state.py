"""Per-key rate limits in memory, on a fake clock, and the headers an admission sends; the
contract both backends (memory and Redis) keep is tests/integration/test_limit_state.py."""

from __future__ import annotations

import pytest

from tests.limit_support import FakeClock, drain
from voxrouter.router.limits.state import Admission, KeyLimits
from voxrouter.router.limits.state.memory import MemoryLimitState


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"




@pytest.mark.anyio
async def test_memory_buckets_refill_with_the_clock():
    clock = FakeClock()
    state = MemoryLimitState(clock=clock)
    limits = KeyLimits(requests_per_minute=60)  # one a second
    assert await drain(state, "k", limits) == 60
    clock.now += 2.5
    assert await drain(state, "k", limits) == 2
    refused = await state.admit("k", limits)
    assert refused.retry_after_s == pytest.approx(0.5)
    clock.now += 3600
    assert (await state.admit("k", limits)).remaining == 59  # refill stops at the capacity


def test_headers_round_retry_after_up_to_whole_seconds():
    refused = Admission(False, "rate_limited", 10, 0, 1_700_000_000, 0.2, 100, 0, None)
    assert refused.headers() == {
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "1700000000",
        "X-RateLimit-Limit-Characters": "100",
        "X-RateLimit-Remaining-Characters": "0",
        "Retry-After": "1",
    }
    assert Admission(False, "rate_limited", 10, 0, 0, 12.01, None, None, None).headers()["Retry-After"] == "13"
