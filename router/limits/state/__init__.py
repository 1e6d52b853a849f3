"""Per-API-key rate limits and concurrency slots: in memory, or in a Redis shared by replicas."""

from __future__ import annotations

from voxrouter.router.limits.state.base import Admission, KeyLimits, LimitState, Slot

__all__ = ["Admission", "KeyLimits", "LimitState", "Slot", "open_limit_state"]


async def open_limit_state(redis_url: str | None, *, lease_s: float, prefix: str = "voxrouter") -> LimitState:
    """Redis at `redis_url` (redis:// or rediss://) when given, else this process's memory."""
    if redis_url:
        from voxrouter.router.limits.state.redis import RedisLimitState

        return await RedisLimitState.connect(redis_url, lease_s=lease_s, prefix=prefix)
    from voxrouter.router.limits.state.memory import MemoryLimitState

    return MemoryLimitState(lease_s)
