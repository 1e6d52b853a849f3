"""One speech request's bookkeeping, kept here and nowhere else: its usage row, its money and its
concurrency slot.

Every request that gets past authentication ends exactly once (`refuse` before its audio starts,
or when `settle_after`'s stream is over), and its ending is
- its one usage row, failed requests included, carrying the request's id (`X-Request-Id`): the
  wallet writes it with the hold and the settlement, in their transactions; a request that held
  no money has it written whole here;
- its money: a hold is committed (what was delivered, never more than was held) or refunded;
- its counts in the metrics;
- and one log line.
The slot is released exactly once, before the settlement. All of it survives the cancellation
of the request that owns it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import AsyncIterator, Callable

import anyio

from voxrouter.providers.base import ProviderError
from voxrouter.router.accounts.auth import Principal
from voxrouter.router.billing.wallet import InsufficientCredit, Reservation, SpendLimitExceeded, Wallet, spend_limits
from voxrouter.router.billing.refusals import credit_refusal
from voxrouter.router.limits.state import Slot
from voxrouter.router.ops import metrics
from voxrouter.router.resilience import dispatch
from voxrouter.router.schemas import SpeechRequest
from voxrouter.router.store.base import SpendLimits, Store, UsageEnd, UsageStart

logger = logging.getLogger("voxrouter.speech")


class SpeechLedger:
    def __init__(self, store: Store, wallet: Wallet, principal: Principal, request_id: str, started: float) -> None:
        self.usage = UsageStart(
            request_id=request_id, org_id=principal.org_id, key_id=principal.key_id, provider=None, model=None, characters=0
        )
        self.attempts: list[dispatch.Attempt] = []  # each target tried or passed over, for the usage row
        self.started = started  # time.monotonic() when the request arrived
        self._store = store
        self._wallet = wallet
        self._principal = principal
        self._slot: Slot | None = None
        self._reservation: Reservation | None = None
        self._ended = False

    @property
    def request_id(self) -> str:
        return self.usage.request_id

    def parsed(self, body: SpeechRequest) -> None:
        self.usage = dataclasses.replace(self.usage, characters=len(body.input), model=body.model)

    def planned(self, plan: dispatch.Plan) -> None:
        primary = plan.targets[0]
        self.attempts = list(plan.skipped)
        self.usage = dataclasses.replace(
            self.usage, provider=primary.provider.id, model=primary.label, characters=plan.characters
        )

    def hold(self, slot: Slot | None) -> None:
        """Own the request's concurrency slot (None: it took none)."""
        self._slot = slot

    async def release(self) -> None:
        """Give the slot back; again is a no-op."""
        slot, self._slot = self._slot, None
        if slot is not None:
            with anyio.CancelScope(shield=True):
                await slot.release()

    async def reserve(self, micros: int) -> None:
        """Hold `micros` of the organization's credit (and of the key's spend caps). A refusal
        ends the request and raises its 402."""
        try:
            self._reservation = await self._wallet.reserve(self.usage, micros, self._spend_limits())
            return
        except (InsufficientCredit, SpendLimitExceeded) as exc:
            error = credit_refusal(exc, micros, "request")
        await self.refuse(error.status, error.code)
        raise error

    async def refuse(self, status: int, code: str) -> None:
        """End the request before its audio started: nothing is charged, a hold is refunded."""
        await self._end(status, code, None, None)

    async def settle_after(
        self, chunks: AsyncIterator[bytes], served: dispatch.Started, price: Callable[[], int]
    ) -> AsyncIterator[bytes]:
        """Yield the audio, then settle: commit when it was delivered or the client hung up after
        it started (the upstream has billed us by then); refund when the upstream or the gateway
        broke mid-stream. `price` is asked once the stream is over (models billed by audio are
        charged for what was measured). Headers are gone by then, so a failure ends the stream
        cleanly (no other provider's audio is spliced on) rather than raising into the server."""
        target = served.target
        charge = False
        status, code = 200, None
        try:
            async for chunk in chunks:
                yield chunk
            charge = True
            served.ticket.succeeded()
        except ProviderError as exc:
            served.ticket.failed(exc)
            code = "upstream_error"
            self.attempts[-1] = dataclasses.replace(self.attempts[-1], outcome="failed", reason=f"mid_stream_{exc.kind.value}")
            logger.warning("stream from %s broke after audio started: %s", target.label, exc.message)
        except Exception:
            served.ticket.abandoned()
            code = "internal_error"
            self.attempts[-1] = dataclasses.replace(self.attempts[-1], outcome="failed", reason="internal_error")
            logger.exception("stream from %s failed inside the gateway", target.label)
        except BaseException:  # the client went away (cancellation, generator closed)
            served.ticket.succeeded()  # the upstream was delivering
            charge = True
            status, code = 499, "client_disconnected"
            raise
        finally:
            await self.release()
            await self._end(status, code, price() if charge else None, target)

    def _spend_limits(self) -> SpendLimits | None:
        p = self._principal
        if p.key_id and (p.daily_limit_micros is not None or p.monthly_limit_micros is not None):
            return spend_limits(p.key_id, p.daily_limit_micros, p.monthly_limit_micros)
        return None

    async def _end(self, status: int, code: str | None, charge: int | None, served: dispatch.Target | None) -> None:
        """The one ending: `charge` None refunds (or charges nothing), an amount commits it."""
        if self._ended:
            raise RuntimeError(f"speech request {self.request_id} already ended")
        self._ended = True
        outcome = self._outcome(status, code, charge or 0, served)
        reservation = self._reservation
        with anyio.CancelScope(shield=True):
            if reservation is None or not reservation.amount_micros:
                await self._record(outcome)  # no money held: the wallet writes no row
            if reservation is not None:
                if charge is None:
                    await reservation.refund(outcome)
                else:
                    await reservation.commit(charge, outcome)
        logger.info(
            "speech request ended: %d %s on %s, %d micro-dollars, %d ms",
            status,
            code or "ok",
            outcome.provider or self.usage.provider or "none",
            outcome.cost_micros,
            outcome.latency_ms,
        )

    async def _record(self, outcome: UsageEnd) -> None:
        try:
            await self._store.record_usage(self.usage, outcome)
        except Exception:  # the row is bookkeeping: losing it never fails the request
            logger.exception("could not record usage for %s", self.request_id)

    def _outcome(self, status: int, code: str | None, cost: int, served: dispatch.Target | None) -> UsageEnd:
        """How the request ended, for its usage row; counted in the metrics as it is built."""
        provider = served.provider.id if served else self.usage.provider or "none"
        metrics.REQUESTS.labels(provider, served.metric_label if served else "none", str(status), code or "").inc()
        metrics.DURATION.labels(provider).observe(time.monotonic() - self.started)
        for attempt in self.attempts:
            if attempt.outcome != "served":
                metrics.FALLBACKS.labels(attempt.provider, attempt.reason or "unknown").inc()
        if cost and served:
            metrics.COST.labels(provider).inc(cost)
        if status == 200:
            metrics.CHARACTERS.labels(provider).inc(self.usage.characters)
        return UsageEnd(
            status=status,
            error_code=code,
            cost_micros=cost,
            latency_ms=round((time.monotonic() - self.started) * 1000),
            attempts=json.dumps([a.as_dict() for a in self.attempts]),
            provider=served.provider.id if served else None,
            model=served.label if served else None,
        )
