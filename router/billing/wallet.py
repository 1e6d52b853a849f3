"""Per-organization wallet: reserve the estimate, then exactly one of commit or refund.

Balance is settled money (top-ups minus commits); reserved is money on hold for
requests in flight; a request is admitted only if balance - reserved covers its estimate
(and its key's daily and monthly caps). Every change leaves a ledger row, and a request that
holds money its usage row, in the same transaction (router/speech/ledger.py writes the row of
a request that holds none). Amounts are integer USD micro-dollars.

A hold is a lease: the process that owns it renews it while the request runs, so when a
process dies (kill -9) its holds expire after `reservation_lease_s` and the sweeper of
any surviving or restarted process refunds them.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid

import anyio

from voxrouter.router.store.base import SpendLimits, Store, UsageEnd, UsageStart, WalletSnapshot

logger = logging.getLogger("voxrouter.wallet")


class InsufficientCredit(Exception):
    def __init__(self, needed_micros: int) -> None:
        super().__init__(f"needs {needed_micros} micro-dollars")
        self.needed_micros = needed_micros


class SpendLimitExceeded(Exception):
    def __init__(self, period: str, limit_micros: int) -> None:
        super().__init__(f"the key's {period} spend limit of {limit_micros} micro-dollars")
        self.period = period
        self.limit_micros = limit_micros


def spend_limits(
    key_id: str, daily_micros: int | None, monthly_micros: int | None, now: dt.datetime | None = None
) -> SpendLimits:
    now = now or dt.datetime.now(dt.timezone.utc)
    return SpendLimits(key_id, now.strftime("%Y-%m-%d"), now.strftime("%Y-%m"), daily_micros, monthly_micros)


class Reservation:
    """Money held for one request. A free request (amount 0) holds nothing: settling it only
    marks it settled."""

    def __init__(self, store: Store, reservation_id: str, usage: UsageStart, amount_micros: int, held: set[str]) -> None:
        self.id = reservation_id
        self.usage = usage
        self.amount_micros = amount_micros
        self._store = store
        self._held = held
        self.settled: str | None = None  # "committed" | "refunded"

    @property
    def org_id(self) -> str:
        return self.usage.org_id

    async def commit(self, actual_micros: int, outcome: UsageEnd | None = None, source: str = "speech") -> None:
        await self._settle("committed", actual_micros, outcome, source)

    async def refund(self, outcome: UsageEnd | None = None, source: str = "speech") -> None:
        await self._settle("refunded", None, outcome, source)

    async def _settle(self, state: str, charge: int | None, outcome: UsageEnd | None, source: str) -> None:
        if self.settled is not None:
            raise RuntimeError(f"reservation {self.id} already {self.settled}")
        self.settled = state
        # Settlement must survive the cancellation of the request that owns it.
        with anyio.CancelScope(shield=True):
            if self.amount_micros:
                try:
                    if not await self._store.settle(self.id, charge, source, outcome):
                        # Another replica's sweeper refunded it: this process stalled past its lease.
                        logger.error("reservation %s was settled elsewhere before its %s", self.id, state)
                finally:
                    self._held.discard(self.id)


class Wallet:
    def __init__(self, store: Store, lease_s: float) -> None:
        self.store = store
        self.lease_ms = int(lease_s * 1000)
        self.held: set[str] = set()  # this process's open reservations, renewed while they run

    async def reserve(
        self, usage: UsageStart, micros: int, limits: SpendLimits | None = None, source: str = "speech"
    ) -> Reservation:
        if micros < 0:
            raise ValueError("cannot reserve a negative amount")
        reservation_id = f"res_{uuid.uuid4().hex}"
        if micros == 0:
            return Reservation(self.store, reservation_id, usage, 0, self.held)
        self.held.add(reservation_id)
        try:
            outcome = await self.store.reserve(reservation_id, micros, self._expiry(), usage, limits, source)
        except BaseException:
            self.held.discard(reservation_id)
            raise
        if outcome != "reserved":
            self.held.discard(reservation_id)
            if outcome == "insufficient_credit":
                raise InsufficientCredit(micros)
            assert limits is not None
            if outcome == "daily_limit":
                raise SpendLimitExceeded("daily", limits.daily_micros or 0)
            raise SpendLimitExceeded("monthly", limits.monthly_micros or 0)
        return Reservation(self.store, reservation_id, usage, micros, self.held)

    async def snapshot(self, org_id: str) -> WalletSnapshot:
        return await self.store.wallet(org_id)

    def _expiry(self) -> int:
        return int(time.time() * 1000) + self.lease_ms

    async def renew(self) -> None:
        """Push the expiry of this process's open holds one lease ahead."""
        if self.held:
            await self.store.renew_reservations(sorted(self.held), self._expiry())

    async def sweep_expired(self) -> int:
        """Refund holds whose owner died (a crashed process); returns how many."""
        refunded = 0
        for reservation_id in await self.store.expired_reservations(int(time.time() * 1000)):
            if reservation_id in self.held:
                continue  # ours and alive: a renewal is late, not lost
            if await self.store.settle(reservation_id, None, "sweeper", None):
                refunded += 1
        if refunded:
            logger.warning("refunded %d expired reservations", refunded)
        return refunded
