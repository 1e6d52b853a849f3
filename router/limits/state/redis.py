"""Limits shared by every replica through one Redis."""

from __future__ import annotations

import logging
import math
import time
import uuid
from typing import Awaitable, Callable

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from voxrouter.router.limits.state.base import CONCURRENCY_RETRY_S, Admission, KeyLimits, Reason, Slot, make_admission
from voxrouter.router.limits.state.memory import MemoryLimitState

logger = logging.getLogger("voxrouter.limits")

_TIMEOUT_S = 0.5  # connect and per command: a slow Redis must not stall the request path
_RECHECK_S = 1.0  # after a failure, decide in memory this long before trying Redis again
_WARN_EVERY_S = 30.0
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)

# Shared by the scripts: the server's clock in ms (so hosts with skewed clocks agree), numbers
# formatted explicitly (Redis' own number-to-argument conversion differs across versions), and
# the slot set's TTL pinned one margin past its latest lease.
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local MARGIN_MS = 1000
local function num(x) return string.format('%.17g', x) end
local function int(x) return string.format('%.0f', math.ceil(x)) end
local function expire_slots(key)
  local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if top[2] then redis.call('PEXPIREAT', key, int(tonumber(top[2]) + MARGIN_MS)) end
end
"""

# KEYS: request bucket, character bucket, slot set.
# ARGV: request capacity, character capacity (-1 = unlimited), characters,
#       max concurrency (-1 = take no slot), slot id, lease ms.
# Returns {reason or '', request tokens or '', character tokens or '', wait ms, now ms}.
_ADMIT = (
    _PRELUDE
    + """
local function level(key, cap)
  local v = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens, ts = tonumber(v[1]), tonumber(v[2])
  if tokens == nil or ts == nil then return cap end
  return math.min(cap, tokens + math.max(0, now - ts) * cap / 60000)
end
local function wait_ms(cap, tokens, needed)
  if tokens >= needed then return 0 end
  if cap <= 0 then return 60000 end
  return (needed - tokens) * 60000 / cap
end
local function save(key, cap, tokens)
  redis.call('HSET', key, 'tokens', num(tokens), 'ts', num(now))
  local full_in = 60000
  if cap > 0 then full_in = math.max(0, cap - tokens) * 60000 / cap end
  redis.call('PEXPIRE', key, int(full_in + MARGIN_MS))
end

local req_cap, chr_cap, chars = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local max_slots, slot_id, lease = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local reason, wait, req, chr = '', 0, nil, nil
if req_cap >= 0 then
  req = level(KEYS[1], req_cap)
  if req < 1 then reason = 'rate_limited'; wait = wait_ms(req_cap, req, 1) end
end
if chr_cap >= 0 then
  chr = level(KEYS[2], chr_cap)
  local needed = chars
  if chr_cap > 0 then needed = math.min(chars, chr_cap) end
  if chr < needed then reason = 'rate_limited'; wait = math.max(wait, wait_ms(chr_cap, chr, needed)) end
end
if reason == '' and max_slots >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', num(now))
  if redis.call('ZCARD', KEYS[3]) >= max_slots then reason = 'concurrency_limited' end
end
if reason == '' then
  if req then req = req - 1; save(KEYS[1], req_cap, req) end
  if chr then chr = chr - chars; save(KEYS[2], chr_cap, chr) end
  if max_slots >= 0 then
    redis.call('ZADD', KEYS[3], num(now + lease), slot_id)
    expire_slots(KEYS[3])
  end
end
return {reason, req and num(req) or '', chr and num(chr) or '', num(wait), num(now)}
"""
)

# KEYS: a slot set; returns how many of its slots are unexpired.
_COUNT = _PRELUDE + "return redis.call('ZCOUNT', KEYS[1], '(' .. num(now), '+inf')"

# KEYS[i]: the slot set of slot ARGV[i + 1]; ARGV[1]: lease ms. XX: a slot that expired
# (and was swept) stays gone. Returns 1 per slot renewed, 0 per slot no longer there.
_RENEW = (
    _PRELUDE
    + """
local expiry, renewed, seen = num(now + tonumber(ARGV[1])), {}, {}
for i, key in ipairs(KEYS) do
  renewed[i] = redis.call('ZADD', key, 'XX', 'CH', expiry, ARGV[i + 1])
  seen[key] = true
end
for key in pairs(seen) do expire_slots(key) end
return renewed
"""
)


class RedisLimitState:
    """Buckets and slot leases in Redis, each `admit` one atomic Lua script (EVALSHA).

    While Redis is unreachable, decisions come from an in-process `MemoryLimitState`
    instead of failing the request: the limits then hold per replica (N replicas admit up
    to N times a key's limit) until Redis answers again, and a slot taken then is released
    there. A warning is logged at most every 30 s meanwhile.
    """

    service: str | None = "redis"

    def __init__(self, client: redis.asyncio.Redis, *, lease_s: float = 30.0, prefix: str = "voxrouter") -> None:
        self.lease_s = lease_s
        self._redis = client
        self._prefix = prefix
        self._admit = client.register_script(_ADMIT)
        self._count = client.register_script(_COUNT)
        self._renew = client.register_script(_RENEW)
        self._held: dict[str, str] = {}  # slot id -> its slot set, renewed while held
        self._fallback = MemoryLimitState(lease_s)
        self._down_until = 0.0
        self._warned_at = -math.inf
        self._degraded = False

    @classmethod
    async def connect(cls, url: str, *, lease_s: float = 30.0, prefix: str = "voxrouter") -> RedisLimitState:
        """Never raises for an unreachable Redis: it warns and decides in memory until one answers."""
        client = redis.asyncio.Redis.from_url(
            url,
            socket_connect_timeout=_TIMEOUT_S,
            socket_timeout=_TIMEOUT_S,
            # One reconnect for a pooled connection the server dropped; never a retried timeout,
            # which could run the script twice.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            decode_responses=True,
        )
        state = cls(client, lease_s=lease_s, prefix=prefix)
        try:
            await client.ping()
        except _UNREACHABLE as exc:
            state._unreachable(exc)
        return state

    async def admit(self, key: str, limits: KeyLimits, characters: int = 0, *, take_slot: bool = False) -> Admission:
        if characters < 0:
            raise ValueError("characters must be >= 0")
        limited_slot = take_slot and limits.max_concurrency is not None
        if limits.requests_per_minute is None and limits.characters_per_minute is None and not limited_slot:
            return make_admission(limits, time.time(), None, 0.0, None, None, Slot() if take_slot else None)
        if time.monotonic() < self._down_until:
            return await self._fallback.admit(key, limits, characters, take_slot=take_slot)
        slot_id = uuid.uuid4().hex if limited_slot else ""
        slots_key = self._key("slots", key)
        try:
            reason, requests, chars, wait_ms, now_ms = await self._admit(
                keys=[self._key("rl", key, "req"), self._key("rl", key, "chr"), slots_key],
                args=[
                    _capacity(limits.requests_per_minute),
                    _capacity(limits.characters_per_minute),
                    characters,
                    _capacity(limits.max_concurrency if take_slot else None),
                    slot_id,
                    int(self.lease_s * 1000),
                ],
            )
        except _UNREACHABLE as exc:
            self._unreachable(exc)
            return await self._fallback.admit(key, limits, characters, take_slot=take_slot)
        if self._degraded:
            self._degraded = False
            logger.warning("Redis answers again: rate limits and slots are shared across replicas")
        decided: Reason | None = reason or None
        slot = None
        if decided is None and take_slot:
            slot = Slot(self._releaser(slot_id, slots_key)) if limited_slot else Slot()
            if limited_slot:
                self._held[slot_id] = slots_key
        return make_admission(
            limits,
            float(now_ms) / 1000,
            decided,
            CONCURRENCY_RETRY_S if decided == "concurrency_limited" else float(wait_ms) / 1000,
            float(requests) if requests else None,
            float(chars) if chars else None,
            slot,
        )

    async def slots_in_use(self, key: str) -> int:
        """Unexpired slots for `key` held by any replica (raises if Redis is unreachable)."""
        return int(await self._count(keys=[self._key("slots", key)]))

    async def renew(self) -> None:
        """Push this process's slot leases one lease ahead, by the server's clock."""
        if not self._held:
            return
        ids = list(self._held)
        try:
            renewed = await self._renew(keys=[self._held[i] for i in ids], args=[int(self.lease_s * 1000), *ids])
        except _UNREACHABLE as exc:
            self._unreachable(exc)
            return
        lost = [slot_id for slot_id, ok in zip(ids, renewed) if not int(ok) and slot_id in self._held]
        if lost:
            # This process stalled past a lease: other replicas may have used those slots meanwhile.
            logger.warning("%d concurrency slots expired before their renewal", len(lost))
            for slot_id in lost:
                self._held.pop(slot_id, None)

    async def ping(self) -> None:
        """Raises when Redis does not answer (for /readyz)."""
        await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose()
        await self._fallback.aclose()

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    def _releaser(self, slot_id: str, slots_key: str) -> Callable[[], Awaitable[None]]:
        async def release() -> None:
            self._held.pop(slot_id, None)
            try:
                await self._redis.zrem(slots_key, slot_id)
            except (RedisError, OSError) as exc:
                logger.warning("could not release concurrency slot %s (%s); its lease frees it", slot_id, exc)

        return release

    def _unreachable(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._down_until = now + _RECHECK_S
        self._degraded = True
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            logger.warning(
                "Redis unreachable (%s: %s): rate limits and concurrency slots hold per replica until it answers",
                type(exc).__name__,
                exc,
            )


def _capacity(limit: int | None) -> int:
    return -1 if limit is None else limit
