"""Stripe billing: an organization's customer, payments credited to its wallet and the money
Stripe takes back. Records and the store's interface."""

from __future__ import annotations

import dataclasses
from typing import Literal, Protocol

from voxrouter.router.store.wallet import WalletSnapshot


@dataclasses.dataclass(frozen=True)
class StripeCredit:
    """A succeeded Stripe payment to credit to an organization's wallet, once."""

    payment_id: str  # the payment intent (a checkout session's own id when it has none): the once-only key
    source_id: str  # the object whose event credits it: pi_... (top-up) or cs_... (checkout)
    org_id: str
    kind: Literal["topup", "checkout"]
    paid_cents: int
    credited_micros: int  # paid, plus a checkout's bonus


@dataclasses.dataclass(frozen=True)
class StripeReversal:
    """Money Stripe took back from a credited payment: a refund or a dispute, applied once.

    A refund's amount is the charge's cumulative `amount_refunded`, so the events of several
    partial refunds may arrive in any order, or twice, and still take back the right total."""

    id: str  # the dispute's id, or "<charge id>:refunded:<cumulative cents>": the once-only key
    payment_id: str
    kind: Literal["stripe_refund", "chargeback"]
    amount_cents: int
    note: str


@dataclasses.dataclass(frozen=True)
class ReversalResult:
    # applied; duplicate (seen before: nothing done); pending (its payment is not credited yet:
    # kept, and applied when the payment's credit arrives)
    outcome: Literal["applied", "duplicate", "pending"]
    micros: int = 0  # taken from the wallet now


class BillingStore(Protocol):
    async def billing_customer(self, org_id: str) -> str | None:
        """The organization's Stripe customer id, if it has one yet."""
        ...

    async def save_billing_customer(self, org_id: str, customer_id: str) -> str:
        """Remember the organization's customer; the one already stored wins (returned)."""
        ...

    async def credit_stripe_payment(self, credit: StripeCredit) -> WalletSnapshot | None:
        """Credit the wallet, write its `topup` ledger row (source stripe, the payment id as note) and
        apply any reversal that arrived first, in one transaction; None if this payment was
        credited before. LookupError for an unknown organization."""
        ...

    async def reverse_stripe_payment(self, reversal: StripeReversal) -> ReversalResult:
        """Take a refund or dispute back from the wallet (the balance may go negative), once per id,
        never more than the payment credited in all."""
        ...
