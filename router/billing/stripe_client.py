"""The few Stripe calls billing makes, through the official `stripe` library.

Calls go through the library's async methods over its httpx client, so none blocks the event
loop; `STRIPE_API_BASE` points them at another base URL (tests: a loopback emulator). Every
POST carries an idempotency key (ours, or the library's for its own retries). Failures come
out as `PaymentError`, whose kind the routes map to a status; messages never hold a key.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Literal, Mapping

import stripe

logger = logging.getLogger("voxrouter.billing")

FailureKind = Literal["authentication_required", "card_declined", "not_found", "idempotency_conflict", "upstream"]


@dataclasses.dataclass(frozen=True)
class Card:
    id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    customer: str | None  # whom it is saved to


@dataclasses.dataclass(frozen=True)
class Intent:
    id: str
    status: str  # succeeded | processing | requires_action | requires_payment_method | ...


@dataclasses.dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str


class PaymentError(Exception):
    def __init__(self, kind: FailureKind, message: str, payment_intent_id: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.payment_intent_id = payment_intent_id


class InvalidEvent(Exception):
    """A webhook delivery that is not a verified Stripe event."""

    def __init__(self, reason: Literal["signature", "payload"], message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _HTTPXClient(stripe.HTTPXClient):
    """The library's httpx client, sending its encoded form as `content=` (httpx deprecates raw `data=`)."""

    def _get_request_args_kwargs(self, method: str, url: str, headers: Mapping[str, str], post_data: Any) -> Any:
        args, kwargs = super()._get_request_args_kwargs(method, url, headers, post_data)
        if isinstance(kwargs.get("data"), (str, bytes)):
            kwargs["content"] = kwargs.pop("data")
        elif kwargs.get("data") == {}:
            del kwargs["data"]
        return args, kwargs


class StripeGateway:
    def __init__(self, api_key: str, *, api_base: str | None = None, timeout_s: float = 30.0, max_network_retries: int = 2) -> None:
        self._http = _HTTPXClient(timeout=timeout_s)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base.rstrip("/")} if api_base else None,
            http_client=self._http,
            max_network_retries=max_network_retries,
        )

    async def aclose(self) -> None:
        await self._http.close_async()

    async def create_customer(self, org_id: str) -> str:
        """A customer for the organization. The key is fixed, so two first calls racing each
        other get the same customer (Stripe keeps keys for 24 hours; ours is stored at once)."""
        params: dict[str, Any] = {"description": f"VoxRouter organization {org_id}", "metadata": {"org_id": org_id}}
        customer = await self._call(self._client.v1.customers.create_async(params, {"idempotency_key": f"voxrouter-customer-{org_id}"}))
        return str(customer.id)

    async def cards(self, customer_id: str, limit: int) -> list[Card]:
        listing = await self._call(
            self._client.v1.customers.payment_methods.list_async(customer_id, {"type": "card", "limit": limit})
        )
        return [card for method in listing.data if (card := _card(method.to_dict())) is not None]

    async def card(self, payment_method_id: str) -> Card | None:
        """The card, or None when Stripe has no payment method by that id (or it is not a card)."""
        try:
            method = await self._call(self._client.v1.payment_methods.retrieve_async(payment_method_id))
        except PaymentError as exc:
            if exc.kind == "not_found":
                return None
            raise
        return _card(method.to_dict())

    async def charge(
        self, *, customer_id: str, payment_method_id: str, amount_cents: int, idempotency_key: str, metadata: Mapping[str, str]
    ) -> Intent:
        """Charge a saved card now, with nobody at the keyboard (off-session)."""
        params: dict[str, Any] = {
            "amount": amount_cents,
            "currency": "usd",
            "customer": customer_id,
            "payment_method": payment_method_id,
            "payment_method_types": ["card"],
            "confirm": True,
            "off_session": True,
            "description": "VoxRouter credits",
            "metadata": dict(metadata),
        }
        intent = await self._call(self._client.v1.payment_intents.create_async(params, {"idempotency_key": idempotency_key}))
        return Intent(id=str(intent.id), status=str(intent.status))

    async def checkout(
        self,
        *,
        customer_id: str,
        amount_cents: int,
        product_name: str,
        success_url: str,
        cancel_url: str,
        metadata: Mapping[str, str],
        payment_metadata: Mapping[str, str],
        save_card: bool,
    ) -> CheckoutSession:
        payment_intent_data: dict[str, Any] = {"metadata": dict(payment_metadata)}
        if save_card:
            payment_intent_data["setup_future_usage"] = "off_session"
        params: dict[str, Any] = {
            "mode": "payment",
            "customer": customer_id,
            "client_reference_id": metadata.get("org_id"),
            "line_items": [
                {"quantity": 1, "price_data": {"currency": "usd", "unit_amount": amount_cents, "product_data": {"name": product_name}}}
            ],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": dict(metadata),
            "payment_intent_data": payment_intent_data,
        }
        session = await self._call(self._client.v1.checkout.sessions.create_async(params))
        return CheckoutSession(id=str(session.id), url=str(session.url))

    async def _call(self, request: Any) -> Any:
        try:
            return await request
        except stripe.StripeError as exc:
            raise _failure(exc) from None


def verify_event(payload: bytes, signature: str | None, secret: str, tolerance_s: int) -> dict[str, Any]:
    """The event in a webhook delivery, once its `Stripe-Signature` (`t=...,v1=<HMAC-SHA256 of
    "t.payload">`) matches the secret and its timestamp is at most `tolerance_s` old."""
    try:
        event = stripe.Webhook.construct_event(payload, signature, secret, tolerance=tolerance_s)
    except stripe.SignatureVerificationError as exc:
        raise InvalidEvent("signature", _signature_problem(str(exc))) from None
    except ValueError:  # not UTF-8, not JSON, or not an event
        raise InvalidEvent("payload", "the body is not a Stripe event (JSON)") from None
    body = event.to_dict()
    if not isinstance(body.get("type"), str) or not isinstance(body.get("data"), dict):
        raise InvalidEvent("payload", "the event has no type or data")
    return body


def _signature_problem(message: str) -> str:
    lowered = message.lower()
    if "tolerance" in lowered:
        return "the Stripe-Signature timestamp is too old (a replayed delivery?)"
    if "no stripe-signature" in lowered:
        return "missing Stripe-Signature header"
    return "the Stripe-Signature does not match this gateway's webhook secret"


def _card(method: Mapping[str, Any]) -> Card | None:
    card = method.get("card")
    if method.get("type") != "card" or not isinstance(card, Mapping):
        return None
    customer = method.get("customer")
    return Card(
        id=str(method["id"]),
        brand=str(card.get("brand") or "unknown"),
        last4=str(card.get("last4") or ""),
        exp_month=int(card.get("exp_month") or 0),
        exp_year=int(card.get("exp_year") or 0),
        customer=customer if isinstance(customer, str) else None,
    )


def _failure(exc: stripe.StripeError) -> PaymentError:
    code = getattr(exc, "code", None)
    logger.warning("Stripe %s (code %s, request %s)", type(exc).__name__, code, exc.request_id)
    if isinstance(exc, stripe.CardError):
        intent = (exc.json_body or {}).get("error", {}).get("payment_intent") or {}
        intent_id = intent.get("id") if isinstance(intent, dict) else None
        message = exc.user_message or "the card was declined"
        if code == "authentication_required":
            return PaymentError("authentication_required", message, intent_id)
        return PaymentError("card_declined", message, intent_id)
    if isinstance(exc, stripe.IdempotencyError):
        return PaymentError("idempotency_conflict", exc.user_message or "idempotency key reused with other parameters")
    if isinstance(exc, stripe.InvalidRequestError) and code == "resource_missing":
        return PaymentError("not_found", exc.user_message or "no such object")
    if isinstance(exc, stripe.AuthenticationError):
        return PaymentError("upstream", "Stripe refused the gateway's API key")
    if isinstance(exc, stripe.APIConnectionError):
        return PaymentError("upstream", "could not reach Stripe")
    suffix = f" (Stripe request {exc.request_id})" if exc.request_id else ""
    return PaymentError("upstream", f"Stripe answered {exc.http_status or 'an error'}: {exc.user_message or type(exc).__name__}{suffix}")
