"""Who is calling: `pk_` API keys (data plane) and `vr_session_` sessions (management).

Secrets are 256-bit random values shown once and stored only as SHA-256 hashes; lookups
are by hash and the match is re-checked in constant time. Valid credentials are cached
for `cache_ttl_s` so the hot path skips the database. A revocation takes effect at once on
the replica that revoked it, at once on the others when Redis is configured (router/revocation.py
publishes it), and within `cache_ttl_s` otherwise. Management writes (minting a key, revoking
one, approving a device) check their session against the database, not the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import time
from typing import Awaitable, Callable, Literal

from starlette.requests import Request

from voxrouter.router.http.errors import ApiError
from voxrouter.router.store.base import ApiKeyRecord, SessionRecord, Store, utcnow_iso

API_KEY_PREFIX = "pk_"
SESSION_PREFIX = "vr_session_"
_CACHE_MAX = 100_000


@dataclasses.dataclass(frozen=True)
class Principal:
    org_id: str
    user_id: str | None
    auth: Literal["api_key", "session"]
    key_id: str | None = None
    token_hash: str = ""
    expires_at: str | None = None  # sessions only
    max_concurrency: int | None = None
    daily_limit_micros: int | None = None
    monthly_limit_micros: int | None = None
    requests_per_minute: int | None = None
    characters_per_minute: int | None = None


@dataclasses.dataclass(frozen=True)
class NewSecret:
    secret: str
    hash: str
    suffix: str


def hash_secret(secret: str) -> str:
    # The secrets are 256-bit random values, so a fast unsalted hash is enough to make
    # the stored form useless to a reader of the database.
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret(prefix: str) -> NewSecret:
    secret = prefix + secrets.token_urlsafe(32)
    return NewSecret(secret=secret, hash=hash_secret(secret), suffix=secret[-4:])


def new_api_key() -> NewSecret:
    return new_secret(API_KEY_PREFIX)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _key_principal(record: ApiKeyRecord) -> Principal:
    return Principal(
        org_id=record.org_id,
        user_id=record.created_by,
        auth="api_key",
        key_id=record.id,
        token_hash=record.key_hash,
        max_concurrency=record.max_concurrency,
        daily_limit_micros=record.daily_limit_micros,
        monthly_limit_micros=record.monthly_limit_micros,
        requests_per_minute=record.requests_per_minute,
        characters_per_minute=record.characters_per_minute,
    )


def _session_principal(record: SessionRecord) -> Principal:
    return Principal(
        org_id=record.org_id, user_id=record.user_id, auth="session", token_hash=record.token_hash, expires_at=record.expires_at
    )


class Authenticator:
    def __init__(self, store: Store, cache_ttl_s: float) -> None:
        self._store = store
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._last_used: dict[str, str] = {}  # key id -> when, written in batches by `flush_last_used`
        # Bumped by every revocation seen: a look-up that raced one is not cached.
        self._epoch = 0
        # Tells the other replicas (router/revocation.py); None: no Redis, they rely on the TTL.
        self.publish: Callable[[str], Awaitable[None]] | None = None

    async def api_key(self, request: Request) -> Principal:
        """Data-plane routes: an API key."""
        return await self._authenticate(request, (API_KEY_PREFIX,))

    async def session(self, request: Request, *, fresh: bool = False) -> Principal:
        """Management routes: a session from `voxrouter login`; API keys are refused.

        `fresh`: check the session against the database, not the cache (for management
        writes, so a session logged out on another replica cannot act in the cache's TTL)."""
        token = bearer_token(request)
        if token is not None and token.startswith(API_KEY_PREFIX):
            raise ApiError(401, "unauthorized", "this route needs a session (vr_session_...) from `voxrouter login`, not an API key")
        return await self._authenticate(request, (SESSION_PREFIX,), fresh=fresh)

    async def any(self, request: Request) -> Principal:
        """Read-only account routes: an API key or a session."""
        return await self._authenticate(request, (API_KEY_PREFIX, SESSION_PREFIX))

    async def _authenticate(self, request: Request, prefixes: tuple[str, ...], *, fresh: bool = False) -> Principal:
        token = bearer_token(request)
        if token is None:
            wanted = " or ".join(f"{p}..." for p in prefixes)
            raise ApiError(401, "unauthorized", f"missing bearer token: send Authorization: Bearer {wanted}")
        if not token.startswith(prefixes):
            raise ApiError(401, "unauthorized", f"this route takes {' or '.join(f'{p}...' for p in prefixes)} credentials")
        return await self._principal(token, fresh=fresh)

    async def session_token(self, token: str, *, fresh: bool = False) -> Principal:
        """A session that came some other way than the Authorization header (the device page's cookie)."""
        if not token.startswith(SESSION_PREFIX):
            raise ApiError(401, "unauthorized", "not a session token")
        return await self._principal(token, fresh=fresh)

    async def _principal(self, token: str, *, fresh: bool = False) -> Principal:
        digest = hash_secret(token)
        now = time.monotonic()
        cached = None if fresh else self._cache.get(digest)
        if cached is not None and cached[0] > now and not _expired(cached[1]):
            principal = cached[1]
        else:
            epoch = self._epoch
            try:
                principal = await self._lookup(token, digest)
            except ApiError:
                self._cache.pop(digest, None)
                raise
            if epoch == self._epoch:  # a revocation seen meanwhile may have raced this read: do not cache it
                if len(self._cache) > _CACHE_MAX:
                    self._cache.clear()
                self._cache[digest] = (now + self._ttl, principal)
        if principal.key_id is not None:
            self._last_used[principal.key_id] = utcnow_iso()
        return principal

    async def _lookup(self, token: str, digest: str) -> Principal:
        if token.startswith(API_KEY_PREFIX):
            key = await self._store.find_api_key(digest)
            if key is None or not hmac.compare_digest(key.key_hash, digest) or key.revoked_at is not None:
                self._cache.pop(digest, None)
                raise ApiError(401, "unauthorized", "invalid or revoked API key")
            return _key_principal(key)
        session = await self._store.find_session(digest)
        if session is None or not hmac.compare_digest(session.token_hash, digest) or session.revoked_at is not None:
            raise ApiError(401, "unauthorized", "invalid or revoked session: run `voxrouter login`")
        principal = _session_principal(session)
        if _expired(principal):
            raise ApiError(401, "unauthorized", "session expired: run `voxrouter login`")
        return principal

    def forget(self, token_hash: str) -> None:
        """Drop a revoked credential from this replica's cache at once."""
        self._epoch += 1
        self._cache.pop(token_hash, None)

    def forget_all(self) -> None:
        """Drop every cached credential (revocations may have been missed)."""
        self._epoch += 1
        self._cache.clear()

    async def revoke(self, token_hash: str) -> None:
        """After the store revoked a credential: drop it here, and on every other replica
        at once where Redis carries the news (else within the cache TTL)."""
        self.forget(token_hash)
        if self.publish is not None:
            await self.publish(token_hash)

    def pending_last_used(self, key_id: str) -> str | None:
        """A use this replica has seen but not written yet."""
        return self._last_used.get(key_id)

    async def flush_last_used(self) -> None:
        """Write the keys' `lastUsedAt` in one batch instead of once per request."""
        pending, self._last_used = self._last_used, {}
        if pending:
            await self._store.touch_api_keys(pending)


def _expired(principal: Principal) -> bool:
    return principal.expires_at is not None and principal.expires_at <= utcnow_iso()
