"""API keys: `pk_` secrets shown once, stored as SHA-256 hashes, compared in constant time."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import time

from starlette.requests import Request

from router.errors import ApiError
from router.store.base import Store

API_KEY_PREFIX = "pk_"
_CACHE_MAX = 100_000


@dataclasses.dataclass(frozen=True)
class Principal:
    key_id: str
    org_id: str


@dataclasses.dataclass(frozen=True)
class NewApiKey:
    secret: str
    key_hash: str
    suffix: str


def hash_secret(secret: str) -> str:
    # The secrets are 256-bit random values, so a fast unsalted hash is enough to make
    # the stored form useless to a reader of the database.
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_api_key() -> NewApiKey:
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return NewApiKey(secret=secret, key_hash=hash_secret(secret), suffix=secret[-4:])


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Authenticator:
    """Resolves bearer API keys to principals, remembering valid ones for `cache_ttl_s`
    so the hot path skips the database; a revocation takes effect within that time."""

    def __init__(self, store: Store, cache_ttl_s: float) -> None:
        self._store = store
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def api_key(self, request: Request) -> Principal:
        token = bearer_token(request)
        if token is None:
            raise ApiError(401, "unauthorized", "missing bearer token: send Authorization: Bearer pk_...")
        if not token.startswith(API_KEY_PREFIX):
            raise ApiError(401, "unauthorized", "this route takes an API key (pk_...)")
        digest = hash_secret(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        record = await self._store.find_api_key(digest)
        if record is None or not hmac.compare_digest(record.key_hash, digest) or record.revoked_at is not None:
            self._cache.pop(digest, None)
            raise ApiError(401, "unauthorized", "invalid or revoked API key")
        principal = Principal(key_id=record.id, org_id=record.org_id)
        if len(self._cache) > _CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (now + self._ttl, principal)
        return principal
