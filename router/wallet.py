"""Per-organization wallet: reserve the estimate, then exactly one of commit or refund.

Balance is settled money (top-ups minus commits); reserved is money on hold for
requests in flight; a request is admitted only if balance - reserved covers its estimate.
Every change leaves a ledger row. Amounts are integer USD micro-dollars.
"""

from __future__ import annotations

import logging
import time
import uuid

import anyio

from router.store.base import Store, WalletSnapshot

logger = logging.getLogger("voxrouter.wallet")


class InsufficientCredit(Exception):
    def __init__(self, needed_micros: int) -> None:
        super().__init__(f"needs {needed_micros} micro-dollars")
        self.needed_micros = needed_micros


class Reservation:
    def __init__(self, store: Store, reservation_id: str, org_id: str, amount_micros: int) -> None:
        self.id = reservation_id
        self.org_id = org_id
        self.amount_micros = amount_micros
        self._store = store
        self.settled: str | None = None  # "committed" | "refunded"

    async def commit(self, actual_micros: int, source: str = "speech") -> None:
        await self._settle("committed", actual_micros, source)

    async def refund(self, source: str = "speech") -> None:
        await self._settle("refunded", None, source)

    async def _settle(self, outcome: str, charge: int | None, source: str) -> None:
        if self.settled is not None:
            raise RuntimeError(f"reservation {self.id} already {self.settled}")
        self.settled = outcome
        if self.amount_micros == 0:
            return  # free requests hold nothing and write no ledger rows
        # Settlement must survive the cancellation of the request that owns it.
        with anyio.CancelScope(shield=True):
            if charge is None:
                await self._store.refund(self.id, source)
            else:
                await self._store.commit(self.id, charge, source)


class Wallet:
    def __init__(self, store: Store, reservation_ttl_s: int) -> None:
        self._store = store
        self._ttl_ms = reservation_ttl_s * 1000

    async def reserve(self, org_id: str, micros: int, source: str = "speech") -> Reservation:
        if micros < 0:
            raise ValueError("cannot reserve a negative amount")
        reservation_id = f"res_{uuid.uuid4().hex}"
        if micros == 0:
            return Reservation(self._store, reservation_id, org_id, 0)
        expires = int(time.time() * 1000) + self._ttl_ms
        if await self._store.reserve(org_id, reservation_id, micros, source, expires) is None:
            raise InsufficientCredit(micros)
        return Reservation(self._store, reservation_id, org_id, micros)

    async def snapshot(self, org_id: str) -> WalletSnapshot:
        return await self._store.wallet(org_id)

    async def sweep_expired(self) -> int:
        """Refund holds whose owner died (a crashed process); returns how many."""
        refunded = 0
        for reservation_id in await self._store.expired_reservations(int(time.time() * 1000)):
            if await self._store.refund(reservation_id, "sweeper"):
                refunded += 1
        if refunded:
            logger.warning("refunded %d expired reservations", refunded)
        return refunded
