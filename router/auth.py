"""API keys: `pk_` secrets shown once, stored as SHA-256 hashes, compared in constant time."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets

from starlette.requests import Request

from router.errors import ApiError
from router.store.base import Store

API_KEY_PREFIX = "pk_"


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


async def authenticate_api_key(request: Request, store: Store) -> Principal:
    token = bearer_token(request)
    if token is None:
        raise ApiError(401, "unauthorized", "missing bearer token: send Authorization: Bearer pk_...")
    if not token.startswith(API_KEY_PREFIX):
        raise ApiError(401, "unauthorized", "this route takes an API key (pk_...)")
    digest = hash_secret(token)
    record = await store.find_api_key(digest)
    if record is None or not hmac.compare_digest(record.key_hash, digest) or record.revoked_at is not None:
        raise ApiError(401, "unauthorized", "invalid or revoked API key")
    return Principal(key_id=record.id, org_id=record.org_id)
