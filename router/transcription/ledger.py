"""One transcription's bookkeeping, as speech/ledger.py keeps a speech request's: its usage row
(`kind: transcription`), its money and its concurrency slot.

Every transcription that gets past authentication ends exactly once: `refuse` (nothing charged,
a hold refunded) or `settle` (the measured duration's price committed). The slot is released
exactly once, before the money is settled; all of it survives the request's cancellation.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time

import anyio

from voxrouter.router.accounts.auth import Principal
from voxrouter.router.billing.wallet import InsufficientCredit, Reservation, SpendLimitExceeded, Wallet, spend_limits
from voxrouter.router.billing.refusals import credit_refusal
from voxrouter.router.limits.state import Slot
from voxrouter.router.ops import metrics
from voxrouter.router.store.base import SpendLimits, Store, UsageEnd, UsageStart

logger = logging.getLogger("voxrouter.transcription")

KIND = "transcription"
SOURCE = "transcription"  # the wallet ledger's source for its holds and settlements


class TranscriptionLedger:
    def __init__(self, store: Store, wallet: Wallet, principal: Principal, request_id: str, started: float) -> None:
        self.usage = UsageStart(
            request_id=request_id, org_id=principal.org_id, key_id=principal.key_id, provider=None, model=None,
            characters=0, kind=KIND,
        )
        self.started = started  # time.monotonic() when the request arrived
        self._store = store
        self._wallet = wallet
        self._principal = principal
        self._slot: Slot | None = None
        self._reservation: Reservation | None = None
        self._ended = False
        self.attempts: list[dict[str, str | None]] = []  # the dispatcher's calls and pass-overs
        self._served: tuple[str, str] | None = None

    @property
    def request_id(self) -> str:
        return self.usage.request_id

    @property
    def ended(self) -> bool:
        return self._ended

    def resolved(self, provider: str, label: str) -> None:
        """The model the request goes to (`provider/model`)."""
        self.usage = dataclasses.replace(self.usage, provider=provider, model=label)

    def served(self, provider: str, label: str) -> None:
        """The model that gave the transcript, when a fallback did (the row keeps both)."""
        if label != self.usage.model:
            self._served = (provider, label)

    @property
    def audio_ms(self) -> int:
        return self.usage.audio_ms

    def measured(self, audio_ms: int) -> None:
        """The upload's duration, what the request is priced on (kept on its usage row)."""
        self.usage = dataclasses.replace(self.usage, audio_ms=audio_ms)

    def hold(self, slot: Slot | None) -> None:
        self._slot = slot

    async def release(self) -> None:
        """Give the slot back; again is a no-op."""
        slot, self._slot = self._slot, None
        if slot is not None:
            with anyio.CancelScope(shield=True):
                await slot.release()

    async def reserve(self, micros: int) -> None:
        """Hold `micros` of the organization's credit and of the key's spend caps (a free model's
        0 holds nothing but still goes through the wallet). A refusal ends the request: 402."""
        try:
            self._reservation = await self._wallet.reserve(self.usage, micros, self._spend_limits(), SOURCE)
            return
        except (InsufficientCredit, SpendLimitExceeded) as exc:
            error = credit_refusal(exc, micros, "transcription")
        await self.refuse(error.status, error.code)
        raise error

    async def refuse(self, status: int, code: str) -> None:
        """End the request without a transcript: nothing is charged, a hold is refunded."""
        await self._end(status, code, None)

    async def settle(self, charge_micros: int) -> None:
        """End the request with its transcript: commit `charge_micros` (never more than was held)."""
        await self._end(200, None, charge_micros)

    def _spend_limits(self) -> SpendLimits | None:
        p = self._principal
        if p.key_id and (p.daily_limit_micros is not None or p.monthly_limit_micros is not None):
            return spend_limits(p.key_id, p.daily_limit_micros, p.monthly_limit_micros)
        return None

    async def _end(self, status: int, code: str | None, charge: int | None) -> None:
        if self._ended:
            raise RuntimeError(f"transcription {self.request_id} already ended")
        self._ended = True
        await self.release()
        reservation = self._reservation
        if reservation is not None and charge is not None:
            charge = min(charge, reservation.amount_micros)
        outcome = self._outcome(status, code, charge or 0)
        with anyio.CancelScope(shield=True):
            if reservation is None or not reservation.amount_micros:
                await self._record(outcome)  # no money held: the wallet writes no row
            if reservation is not None:
                if charge is None:
                    await reservation.refund(outcome, source=SOURCE)
                else:
                    await reservation.commit(charge, outcome, source=SOURCE)
        logger.info(
            "transcription ended: %d %s on %s, %d ms of audio, %d micro-dollars, %d ms",
            status, code or "ok", self.usage.model or "none", self.audio_ms, outcome.cost_micros, outcome.latency_ms,
        )

    async def _record(self, outcome: UsageEnd) -> None:
        try:
            await self._store.record_usage(self.usage, outcome)
        except Exception:  # the row is bookkeeping: losing it never fails the request
            logger.exception("could not record usage for %s", self.request_id)

    def _outcome(self, status: int, code: str | None, cost: int) -> UsageEnd:
        provider, model = self._served or (self.usage.provider or "none", self.usage.model or "none")
        metrics.TRANSCRIPTIONS.labels(provider, model, str(status), code or "").inc()
        if status == 200:
            metrics.TRANSCRIBED_SECONDS.labels(provider).inc(self.audio_ms / 1000)
            if cost:
                metrics.COST.labels(provider).inc(cost)
        return UsageEnd(
            status=status,
            error_code=code,
            cost_micros=cost,
            latency_ms=round((time.monotonic() - self.started) * 1000),
            attempts=json.dumps(self.attempts),
            provider=self._served[0] if self._served else None,
            model=self._served[1] if self._served else None,
        )
