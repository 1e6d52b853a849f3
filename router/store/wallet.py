"""An organization's wallet: the balance, holds on it (reservations), a key's spend caps, the
ledger. Records and the store's interface; the money logic over them is router/billing/wallet.py."""

from __future__ import annotations

import dataclasses
from typing import Literal, Protocol

from voxrouter.router.store.usage import UsageEnd, UsageStart


@dataclasses.dataclass(frozen=True)
class WalletSnapshot:
    balance_micros: int
    reserved_micros: int


@dataclasses.dataclass(frozen=True)
class LedgerRow:
    created_at: str
    kind: str  # topup | reserve | commit | refund | stripe_refund | chargeback
    micros_delta: int
    micros_balance_after: int
    source: str


@dataclasses.dataclass(frozen=True)
class SpendLimits:
    """A key's caps and the calendar periods (UTC) they count in."""

    key_id: str
    day: str  # "2026-11-21"
    month: str  # "2026-11"
    daily_micros: int | None
    monthly_micros: int | None


ReserveOutcome = Literal["reserved", "insufficient_credit", "daily_limit", "monthly_limit"]


class WalletStore(Protocol):
    async def topup(self, org_id: str, micros: int, source: str, note: str | None = None) -> WalletSnapshot: ...

    async def reserve(
        self,
        reservation_id: str,
        micros: int,
        expires_at_ms: int,
        usage: UsageStart,
        limits: SpendLimits | None = None,
        source: str = "speech",
    ) -> ReserveOutcome:
        """Hold `micros` if the wallet and the key's caps allow; nothing is written when they don't."""
        ...

    async def settle(self, reservation_id: str, charge_micros: int | None, source: str, usage: UsageEnd | None) -> bool:
        """Commit (charge up to the hold) or refund (charge None) and finish the usage row;
        False if already settled."""
        ...

    async def renew_reservations(self, reservation_ids: list[str], expires_at_ms: int) -> None: ...

    async def expired_reservations(self, now_ms: int) -> list[str]: ...

    async def wallet(self, org_id: str) -> WalletSnapshot: ...

    async def activity(self, org_id: str, limit: int) -> list[LedgerRow]:
        """The organization's latest ledger rows, newest first."""
        ...
