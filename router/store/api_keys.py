"""API keys: their records and the store's interface."""

from __future__ import annotations

import dataclasses
from typing import Protocol


class TooManyKeys(Exception):
    """The organization already has as many live (unrevoked) API keys as it may."""


@dataclasses.dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    org_id: str
    name: str
    key_hash: str
    key_suffix: str
    max_concurrency: int | None
    created_at: str
    revoked_at: str | None
    created_by: str | None = None
    daily_limit_micros: int | None = None
    monthly_limit_micros: int | None = None
    last_used_at: str | None = None
    requests_per_minute: int | None = None
    characters_per_minute: int | None = None


@dataclasses.dataclass(frozen=True)
class NewApiKeyRecord:
    org_id: str
    name: str
    key_hash: str
    key_suffix: str
    created_by: str | None = None
    max_concurrency: int | None = None
    daily_limit_micros: int | None = None
    monthly_limit_micros: int | None = None
    requests_per_minute: int | None = None
    characters_per_minute: int | None = None


class ApiKeyStore(Protocol):
    async def create_api_key(self, new: NewApiKeyRecord, *, max_live: int | None = None) -> ApiKeyRecord:
        """`max_live`: raise TooManyKeys instead when the organization already has that many
        unrevoked keys (checked and inserted in one transaction)."""
        ...

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None: ...

    async def list_api_keys(self, org_id: str) -> list[ApiKeyRecord]:
        """The organization's live keys, oldest first."""
        ...

    async def get_api_key(self, org_id: str, key_id: str) -> ApiKeyRecord | None: ...

    async def revoke_api_key(self, key_id: str) -> bool: ...

    async def touch_api_keys(self, last_used: dict[str, str]) -> None:
        """Move each key's `last_used_at` forward (never back) to the given time."""
        ...
