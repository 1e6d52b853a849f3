"""The storage interface the gateway needs; one implementation per database engine."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Protocol


def utcnow_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


@dataclasses.dataclass(frozen=True)
class WalletSnapshot:
    balance_micros: int
    reserved_micros: int

    @property
    def available_micros(self) -> int:
        return self.balance_micros - self.reserved_micros


@dataclasses.dataclass(frozen=True)
class LedgerRow:
    created_at: str
    kind: str  # topup | reserve | commit | refund
    micros_delta: int
    micros_balance_after: int
    source: str


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ensure_org(self, name: str) -> str: ...

    async def create_api_key(self, org_id: str, name: str, key_hash: str, key_suffix: str) -> ApiKeyRecord: ...

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None: ...

    async def topup(self, org_id: str, micros: int, source: str) -> WalletSnapshot: ...

    async def reserve(
        self, org_id: str, reservation_id: str, micros: int, source: str, expires_at_ms: int
    ) -> WalletSnapshot | None:
        """Hold `micros` if available; None (and nothing written) when it is not."""
        ...

    async def commit(self, reservation_id: str, actual_micros: int, source: str) -> bool:
        """Charge up to the held amount and release the hold; False if already settled."""
        ...

    async def refund(self, reservation_id: str, source: str) -> bool:
        """Release the hold without charge; False if already settled."""
        ...

    async def expired_reservations(self, now_ms: int) -> list[str]: ...

    async def wallet(self, org_id: str) -> WalletSnapshot: ...

    async def activity(self, org_id: str, limit: int) -> list[LedgerRow]: ...
