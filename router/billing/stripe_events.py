"""What a verified Stripe event does to the wallets: credit a payment, or take a refund or a
dispute back, each exactly once however often (and in whatever order) Stripe delivers them.

- `payment_intent.succeeded` credits an off-session top-up (metadata kind `topup`): the amount
  received. Checkout's own payment intents (kind `checkout`) are credited by their session.
- `checkout.session.completed` / `checkout.session.async_payment_succeeded`, once paid: the
  amount plus its bonus (metadata `credit_micros`, fixed when the session was created).
- `charge.refunded`: the refunded share of what the payment credited (bonus included).
- `charge.dispute.created`: the disputed share, likewise.

Every other event is acknowledged and ignored. The once-only keys are the payment intent's id
(so a session and its payment intent can never both credit), the dispute's id, and the charge's
cumulative refunded amount.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from voxrouter.router.store.base import Store, StripeCredit, StripeReversal

logger = logging.getLogger("voxrouter.billing")

MICROS_PER_CENT = 10_000


class MalformedEvent(ValueError):
    """A verified event without the fields its type must have."""


async def apply_event(store: Store, event: Mapping[str, Any]) -> str:
    """Apply one verified event; what happened, for the log and the tests."""
    kind = event["type"]
    obj = event["data"].get("object")
    if not isinstance(obj, Mapping):
        raise MalformedEvent("event data has no object")
    if kind == "payment_intent.succeeded":
        return await _credit(store, _topup_credit(obj))
    if kind in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
        return await _credit(store, _checkout_credit(obj))
    if kind == "charge.refunded":
        charge_id, refunded = _text(obj, "id"), _cents(obj, "amount_refunded")
        payment_id = _optional_text(obj, "payment_intent") or charge_id
        note = f"refund of {payment_id} ({charge_id}, {refunded} cents refunded in all)"
        return await _reverse(store, StripeReversal(f"{charge_id}:refunded:{refunded}", payment_id, "stripe_refund", refunded, note))
    if kind == "charge.dispute.created":
        dispute_id, amount = _text(obj, "id"), _cents(obj, "amount")
        payment_id = _optional_text(obj, "payment_intent") or _text(obj, "charge")
        note = f"dispute {dispute_id} of {payment_id} ({amount} cents)"
        return await _reverse(store, StripeReversal(dispute_id, payment_id, "chargeback", amount, note))
    return "ignored: not an event billing acts on"


def _topup_credit(intent: Mapping[str, Any]) -> StripeCredit | str:
    metadata = _metadata(intent)
    if metadata.get("kind") != "topup":
        return "ignored: not a top-up payment intent"
    if intent.get("currency") != "usd":
        return f"ignored: currency {intent.get('currency')!r}"
    cents = _cents(intent, "amount_received")
    intent_id = _text(intent, "id")
    return StripeCredit(intent_id, intent_id, _org(metadata), "topup", cents, cents * MICROS_PER_CENT)


def _checkout_credit(session: Mapping[str, Any]) -> StripeCredit | str:
    metadata = _metadata(session)
    if metadata.get("kind") != "checkout":
        return "ignored: not a credits checkout"
    if session.get("payment_status") != "paid":
        return "ignored: not paid yet (async_payment_succeeded follows)"
    if session.get("currency") != "usd":
        return f"ignored: currency {session.get('currency')!r}"
    session_id, cents = _text(session, "id"), _cents(session, "amount_total")
    paid_micros = cents * MICROS_PER_CENT
    credit = metadata.get("credit_micros", "")
    # The bonus was fixed when the session was made; anything odd credits what was paid.
    if credit.isdigit() and paid_micros <= int(credit) <= 2 * paid_micros:
        credit_micros = int(credit)
    else:
        logger.error("checkout %s: credit_micros %r is not between its amount and twice it; crediting the amount", session_id, credit)
        credit_micros = paid_micros
    payment_id = _optional_text(session, "payment_intent") or session_id
    return StripeCredit(payment_id, session_id, _org(metadata), "checkout", cents, credit_micros)


async def _credit(store: Store, credit: StripeCredit | str) -> str:
    if isinstance(credit, str):
        return credit
    if credit.paid_cents <= 0:
        return "ignored: nothing paid"
    try:
        snap = await store.credit_stripe_payment(credit)
    except LookupError:
        # Not an organization of this gateway (another deployment on the same Stripe account?):
        # acknowledged, or Stripe would redeliver it for days.
        logger.error("payment %s names unknown organization %s; not credited", credit.payment_id, credit.org_id)
        return "ignored: unknown organization"
    if snap is None:
        return f"duplicate: {credit.payment_id} was credited before"
    logger.info("credited %d micro-dollars to %s for %s", credit.credited_micros, credit.org_id, credit.payment_id)
    return f"credited {credit.credited_micros}"


async def _reverse(store: Store, reversal: StripeReversal) -> str:
    result = await store.reverse_stripe_payment(reversal)
    if result.outcome == "pending":
        logger.warning("%s: payment %s is not credited (yet); applied when it is", reversal.id, reversal.payment_id)
    elif result.outcome == "applied":
        logger.info("took back %d micro-dollars for %s", result.micros, reversal.id)
    return f"{result.outcome} {result.micros}"


def _metadata(obj: Mapping[str, Any]) -> dict[str, str]:
    metadata = obj.get("metadata")
    return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, Mapping) else {}


def _org(metadata: Mapping[str, str]) -> str:
    org_id = metadata.get("org_id", "")
    if not org_id:
        raise MalformedEvent("metadata.org_id is missing")
    return org_id


def _text(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedEvent(f"{key} is missing")
    return value


def _optional_text(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if isinstance(value, Mapping):  # an expanded object
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _cents(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MalformedEvent(f"{key} is not a whole number of cents")
    return value
