"""Revocations reach every replica at once: a Redis pub/sub channel of revoked credential hashes.

When a key is revoked or a session ends, the replica that did it drops the credential
from its own cache and publishes its SHA-256 hash on `<redis_prefix>:revoked`; every
replica's subscriber drops it from its `Authenticator` cache on receipt. The message holds
only the hash, which the database holds too (useless without the secret).

Without Redis, or while it is unreachable, other replicas notice within `auth.key_cache_ttl_s`
(the cache's TTL), as before. After the subscriber (re)connects, it clears the whole cache,
since revocations published while it was away were lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Callable

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

logger = logging.getLogger("voxrouter.revocation")

_CONNECT_TIMEOUT_S = 0.5
_PUBLISH_TIMEOUT_S = 0.5  # a slow Redis must not stall a logout: the TTL is the fallback
_RETRY_S = (0.1, 0.5, 1.0, 2.0, 5.0)  # reconnect backoff
_WARN_EVERY_S = 30.0
READY_WAIT_S = 2.0  # how long start-up waits for the first subscription


class RevocationBus:
    def __init__(self, url: str, prefix: str) -> None:
        self.channel = f"{prefix}:revoked"
        self._url = url
        self._publisher = redis.asyncio.Redis.from_url(
            url, socket_connect_timeout=_CONNECT_TIMEOUT_S, socket_timeout=_PUBLISH_TIMEOUT_S, decode_responses=True
        )
        self.subscribed = asyncio.Event()  # set while the subscriber is listening
        self._warned_at = -math.inf

    async def publish(self, token_hash: str) -> None:
        """Tell the other replicas; never raises (they fall back to the cache TTL)."""
        try:
            await asyncio.wait_for(self._publisher.publish(self.channel, token_hash), _PUBLISH_TIMEOUT_S * 2)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._warn("could not publish a revocation (other replicas drop it within auth.key_cache_ttl_s)", exc)

    async def listen(self, on_revoked: Callable[[str], None], on_reconnect: Callable[[], None]) -> None:
        """Run until cancelled: subscribe, hand every revoked hash to `on_revoked`, and
        reconnect with backoff when Redis goes away (calling `on_reconnect` once back)."""
        failures = 0
        while True:
            # No socket_timeout: an idle subscription is silent for as long as nobody revokes;
            # the health check pings through it so a dead connection is noticed. No silent
            # reconnects inside redis-py either: every drop comes here, so the cache is cleared.
            client = redis.asyncio.Redis.from_url(
                self._url,
                socket_connect_timeout=_CONNECT_TIMEOUT_S,
                health_check_interval=15,
                retry=Retry(NoBackoff(), 0),
                client_name=f"{self.channel}-subscriber",
                decode_responses=True,
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if failures:
                    on_reconnect()
                    logger.warning("revocation channel subscribed again: revocations reach this replica at once")
                failures = 0
                self.subscribed.set()
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is not None and message.get("type") == "message":
                        data = message.get("data")
                        if isinstance(data, str) and data:
                            on_revoked(data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect, never die
                self.subscribed.clear()
                self._warn("revocation channel lost (other replicas' revocations apply within auth.key_cache_ttl_s)", exc)
                delay = _RETRY_S[min(failures, len(_RETRY_S) - 1)]
                failures += 1
                await asyncio.sleep(delay)
            finally:
                self.subscribed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._publisher.aclose()

    def _warn(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            logger.warning("%s: %s: %s", what, type(exc).__name__, exc)
