"""Limits in this process's memory: exact for one replica, per replica for several."""

from __future__ import annotations

import dataclasses
import time
from typing import Awaitable, Callable

from voxrouter.router.limits.state.base import (
    CONCURRENCY_RETRY_S,
    Admission,
    KeyLimits,
    Reason,
    Slot,
    characters_needed,
    make_admission,
    seconds_to_refill,
)

_MAX_BUCKETS = 100_000  # past this many, full (idle) buckets are dropped: a full bucket equals no bucket


@dataclasses.dataclass(slots=True)
class _Bucket:
    capacity: int
    tokens: float
    at: float  # clock reading when `tokens` was true


class MemoryLimitState:
    """Token buckets and slot counts in plain dicts. `admit` never awaits between its
    check and its consume, so the event loop makes it atomic. Slots have no lease here
    (`lease_s` is accepted for symmetry): a process that dies loses them with everything else."""

    service: str | None = None  # nothing outside this process to check

    def __init__(self, lease_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.lease_s = lease_s
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._slots: dict[str, int] = {}

    async def admit(self, key: str, limits: KeyLimits, characters: int = 0, *, take_slot: bool = False) -> Admission:
        return self._decide(key, limits, characters, take_slot)

    def _decide(self, key: str, limits: KeyLimits, characters: int, take_slot: bool) -> Admission:
        """The whole decision in one synchronous step: nothing can interleave."""
        if characters < 0:
            raise ValueError("characters must be >= 0")
        now = self._clock()
        reason: Reason | None = None
        wait = 0.0
        requests = chars = None
        if limits.requests_per_minute is not None:
            requests = self._level(key, "req", limits.requests_per_minute, now)
            if requests < 1:
                reason, wait = "rate_limited", seconds_to_refill(limits.requests_per_minute, requests, 1)
        if limits.characters_per_minute is not None:
            chars = self._level(key, "chr", limits.characters_per_minute, now)
            needed = characters_needed(limits.characters_per_minute, characters)
            if chars < needed:
                reason, wait = "rate_limited", max(wait, seconds_to_refill(limits.characters_per_minute, chars, needed))
        limited_slots = take_slot and limits.max_concurrency is not None
        if reason is None and limited_slots and self._slots.get(key, 0) >= (limits.max_concurrency or 0):
            reason, wait = "concurrency_limited", CONCURRENCY_RETRY_S

        slot = None
        if reason is None:
            if requests is not None:
                requests -= 1
                self._store(key, "req", limits.requests_per_minute or 0, requests, now)
            if chars is not None:
                chars -= characters
                self._store(key, "chr", limits.characters_per_minute or 0, chars, now)
            if limited_slots:
                self._slots[key] = self._slots.get(key, 0) + 1
                slot = Slot(self._releaser(key))
            elif take_slot:
                slot = Slot()
        return make_admission(limits, time.time(), reason, wait, requests, chars, slot)

    async def slots_in_use(self, key: str) -> int:
        return self._slots.get(key, 0)

    async def renew(self) -> None:
        """Nothing to renew: memory slots have no lease."""

    async def ping(self) -> None:
        """Always answers: it is this process."""

    async def aclose(self) -> None:
        self._buckets.clear()
        self._slots.clear()

    def _level(self, key: str, kind: str, capacity: int, now: float) -> float:
        bucket = self._buckets.get((key, kind))
        if bucket is None:
            return float(capacity)
        # A lowered limit caps what was saved under the old one.
        return min(float(capacity), bucket.tokens + max(0.0, now - bucket.at) * capacity / 60.0)

    def _store(self, key: str, kind: str, capacity: int, tokens: float, now: float) -> None:
        self._buckets[(key, kind)] = _Bucket(capacity, tokens, now)
        if len(self._buckets) > _MAX_BUCKETS:
            self._buckets = {k: b for k, b in self._buckets.items() if self._level(k[0], k[1], b.capacity, now) < b.capacity}

    def _releaser(self, key: str) -> Callable[[], Awaitable[None]]:
        async def release() -> None:
            left = self._slots.get(key, 0) - 1
            if left > 0:
                self._slots[key] = left
            else:
                self._slots.pop(key, None)

        return release
