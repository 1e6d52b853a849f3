"""Per-API-key limits: two token buckets (requests and characters per minute) and
concurrency slots, decided in one atomic step by a `LimitState`."""

from __future__ import annotations

import dataclasses
import math
from typing import Awaitable, Callable, Literal, Protocol

import anyio

Reason = Literal["rate_limited", "concurrency_limited"]
# Retry-After for a refused slot: slots free up when requests finish, which no clock predicts.
CONCURRENCY_RETRY_S = 1.0


@dataclasses.dataclass(frozen=True)
class KeyLimits:
    requests_per_minute: int | None = None  # None = unlimited
    characters_per_minute: int | None = None  # None = unlimited
    max_concurrency: int | None = None  # None = unlimited

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "characters_per_minute", "max_concurrency"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or None, not {value}")


class Slot:
    """A held concurrency slot. `release()` is idempotent and never raises, so `finally`
    blocks may call it, cancelled or not."""

    def __init__(self, release: Callable[[], Awaitable[None]] | None = None) -> None:
        self._release = release
        self.released = False

    async def release(self) -> None:
        if self.released:
            return
        self.released = True
        if self._release is not None:
            # A cancelled request still gives its slot back.
            with anyio.CancelScope(shield=True):
                await self._release()


@dataclasses.dataclass(frozen=True)
class Admission:
    allowed: bool
    reason: Reason | None  # None when allowed
    limit: int | None  # requests per minute (None = unlimited)
    remaining: int | None  # whole requests left in the request bucket after this one
    reset_at: int  # unix seconds at which the request bucket is full again
    retry_after_s: float  # 0 when allowed; else seconds until this same request would pass
    characters_limit: int | None
    characters_remaining: int | None
    slot: Slot | None  # held when allowed with take_slot=True

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.limit is not None:
            headers["X-RateLimit-Limit"] = str(self.limit)
            headers["X-RateLimit-Remaining"] = str(self.remaining or 0)
            headers["X-RateLimit-Reset"] = str(self.reset_at)
        if self.characters_limit is not None:
            headers["X-RateLimit-Limit-Characters"] = str(self.characters_limit)
            headers["X-RateLimit-Remaining-Characters"] = str(self.characters_remaining or 0)
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return headers


class LimitState(Protocol):
    # The outside service the state lives in ("redis"), which readiness checks with `ping`;
    # None where it lives in this process.
    service: str | None

    async def admit(self, key: str, limits: KeyLimits, characters: int = 0, *, take_slot: bool = False) -> Admission:
        """Check and consume both buckets and (with take_slot) a slot, all or nothing."""
        ...

    async def slots_in_use(self, key: str) -> int:
        """Live slots for `key` (across replicas where the state is shared)."""
        ...

    async def renew(self) -> None:
        """Extend the leases of the slots this process holds; call every lease/4."""
        ...

    async def ping(self) -> None:
        """Raises when `service` does not answer (for /readyz)."""
        ...

    async def aclose(self) -> None: ...


def seconds_to_refill(capacity: int, tokens: float, needed: float) -> float:
    """How long until a bucket of `capacity` per minute holding `tokens` holds `needed`."""
    if tokens >= needed:
        return 0.0
    if capacity <= 0:
        return 60.0  # a zero allowance never refills: ask again in a minute
    return (needed - tokens) * 60.0 / capacity


def characters_needed(capacity: int, characters: int) -> int:
    """Tokens the character bucket must hold: an input longer than the whole allowance
    passes on a full bucket (and leaves a debt), except where the allowance is zero."""
    return min(characters, capacity) if capacity > 0 else characters


def make_admission(
    limits: KeyLimits,
    now_unix: float,
    reason: Reason | None,
    retry_after_s: float,
    request_tokens: float | None,
    character_tokens: float | None,
    slot: Slot | None,
) -> Admission:
    """The decision as callers see it, from the bucket levels after it was taken."""
    remaining = chars_remaining = None
    reset_at = int(now_unix)
    if limits.requests_per_minute is not None and request_tokens is not None:
        remaining = max(0, math.floor(request_tokens))
        reset_at = math.ceil(now_unix + seconds_to_refill(limits.requests_per_minute, request_tokens, limits.requests_per_minute))
    if limits.characters_per_minute is not None and character_tokens is not None:
        chars_remaining = max(0, math.floor(character_tokens))
    return Admission(
        allowed=reason is None,
        reason=reason,
        limit=limits.requests_per_minute,
        remaining=remaining,
        reset_at=reset_at,
        retry_after_s=0.0 if reason is None else retry_after_s,
        characters_limit=limits.characters_per_minute,
        characters_remaining=chars_remaining,
        slot=slot,
    )
