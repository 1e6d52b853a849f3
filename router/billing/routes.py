"""`/v1/billing/*`: saved cards, off-session top-ups and browser checkout with Stripe, and the
webhook through which Stripe tells the gateway what was paid.

The routes that take money never credit the wallet themselves: the signed webhook does, once
per payment (router/stripe_events.py). Each organization gets a Stripe customer on its first
billing call; its saved cards are that customer's. Without `STRIPE_API_KEY` the routes answer
503 `billing_not_configured` (the webhook: without `STRIPE_WEBHOOK_SECRET`), and operators
grant credit with `voxrouter admin grant-credit`.
"""

from __future__ import annotations

import hashlib
import html
import logging
from typing import Awaitable, TypeVar

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from voxrouter.router import schemas
from voxrouter.router.billing.stripe_client import InvalidEvent, PaymentError, StripeGateway, verify_event
from voxrouter.router.billing.stripe_events import MICROS_PER_CENT, MalformedEvent, apply_event
from voxrouter.router.gateway import Gateway
from voxrouter.router.http.body import read_body, read_raw
from voxrouter.router.http.errors import ApiError
from voxrouter.router.http.operation import SESSION, ApiRoute, Operation
from voxrouter.router.http.public_url import public_base
from voxrouter.router.schemas import CheckoutOut, CheckoutRequest, PaymentMethodOut, TopupOut, TopupRequest, WebhookOut

logger = logging.getLogger("voxrouter.billing")
T = TypeVar("T")

_SMALL_BODY = 16_384
_ERRORS: dict[str, tuple[int, str]] = {
    "authentication_required": (402, "stripe_3ds_required"),
    "card_declined": (402, "card_declined"),
    "not_found": (404, "not_found"),
    "idempotency_conflict": (409, "conflict"),
    "upstream": (502, "upstream_error"),
}


async def list_methods(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    principal = await gateway.auth.session(request)
    stripe = _stripe(gateway)
    customer = await _customer(gateway, stripe, principal.org_id)
    cards = await _paying(stripe.cards(customer, gateway.config.billing.max_methods))
    body = [
        PaymentMethodOut(id=c.id, brand=c.brand, last4=c.last4, exp_month=c.exp_month, exp_year=c.exp_year).model_dump(by_alias=True)
        for c in cards
    ]
    return JSONResponse(body)


async def topup(request: Request) -> Response:
    """Charge a saved card off-session. 402 when the card needs its holder (3-D Secure) or is
    declined; the credit arrives with the `payment_intent.succeeded` webhook."""
    gateway: Gateway = request.app.state.gateway
    principal = await gateway.auth.session(request, fresh=True)  # spends money: a logged-out session may not
    stripe = _stripe(gateway)
    spec = gateway.config.billing
    body = await read_body(request, TopupRequest, _SMALL_BODY)
    _check_amount(body.amount_cents, spec.topup_min_cents, spec.topup_max_cents)
    customer = await _customer(gateway, stripe, principal.org_id)
    card = await _paying(stripe.card(body.payment_method_id))
    if card is None or card.customer != customer:
        # Another organization's card is as absent as one that does not exist.
        raise ApiError(404, "not_found", f"no saved card {body.payment_method_id!r} in your organization (see GET /v1/billing/methods)")
    intent = await _paying(
        stripe.charge(
            customer_id=customer,
            payment_method_id=card.id,
            amount_cents=body.amount_cents,
            idempotency_key=_idempotency_key(principal.org_id, body.idempotency_key),
            metadata={"org_id": principal.org_id, "kind": "topup"},
        )
    )
    if intent.status == "requires_action":
        raise ApiError(402, "stripe_3ds_required", f"the card needs its holder to authenticate (payment {intent.id}); use checkout instead")
    if intent.status in ("requires_payment_method", "canceled"):
        raise ApiError(402, "card_declined", f"the card was declined (payment {intent.id})")
    return JSONResponse(TopupOut(payment_intent_id=intent.id, status=intent.status).model_dump())


async def checkout(request: Request) -> Response:
    """A Stripe Checkout page for buying credits in the browser, with the configured bonus."""
    gateway: Gateway = request.app.state.gateway
    principal = await gateway.auth.session(request, fresh=True)  # spends money: a logged-out session may not
    stripe = _stripe(gateway)
    spec = gateway.config.billing
    body = await read_body(request, CheckoutRequest, _SMALL_BODY)
    _check_amount(body.amount_cents, spec.checkout_min_cents, spec.checkout_max_cents)
    bonus = spec.bonus_percent(body.amount_cents)
    credit_micros = credit_for(body.amount_cents, bonus)
    customer = await _customer(gateway, stripe, principal.org_id)
    base = public_base(request, gateway.config.auth)
    session = await _paying(
        stripe.checkout(
            customer_id=customer,
            amount_cents=body.amount_cents,
            product_name=spec.product_name,
            success_url=spec.success_url or f"{base}/billing/success?session_id={{CHECKOUT_SESSION_ID}}",
            cancel_url=spec.cancel_url or f"{base}/billing/cancel",
            metadata={"org_id": principal.org_id, "kind": "checkout", "credit_micros": str(credit_micros), "bonus_percent": str(bonus)},
            payment_metadata={"org_id": principal.org_id, "kind": "checkout"},
            save_card=spec.save_cards,
        )
    )
    out = CheckoutOut(id=session.id, url=session.url, amount_cents=body.amount_cents, bonus_percent=bonus, credit_micros=credit_micros)
    return JSONResponse(out.model_dump(by_alias=True))


async def webhook(request: Request) -> Response:
    """Stripe's events, authenticated by their signature alone. 400 (nothing done) for a
    missing, wrong or stale signature; 2xx once the event is applied (or ignored); any other
    answer makes Stripe deliver it again later."""
    gateway: Gateway = request.app.state.gateway
    signature = request.headers.get("stripe-signature")
    if not signature:  # not a Stripe delivery, configured or not
        raise ApiError(400, "invalid_signature", "missing Stripe-Signature header")
    secret = gateway.stripe_webhook_secret
    if secret is None:
        raise ApiError(503, "billing_not_configured", "this gateway has no Stripe webhook secret (STRIPE_WEBHOOK_SECRET)")
    payload = await read_raw(request, gateway.config.server.max_body_bytes)
    try:
        event = verify_event(payload, signature, secret, gateway.config.billing.webhook_tolerance_s)
    except InvalidEvent as exc:
        logger.warning("webhook refused: %s", exc)
        raise ApiError(400, "invalid_signature" if exc.reason == "signature" else "invalid_body", str(exc)) from None
    try:
        outcome = await apply_event(gateway.store, event)
    except MalformedEvent as exc:
        raise ApiError(400, "invalid_body", f"{event['type']}: {exc}") from None
    logger.info("stripe event %s (%s): %s", event.get("id"), event["type"], outcome)
    return JSONResponse(WebhookOut(received=True).model_dump())


async def checkout_success(request: Request) -> Response:
    return _page("Payment received", "Thank you. Your credits appear in your wallet as soon as Stripe confirms the payment.")


async def checkout_cancel(request: Request) -> Response:
    return _page("Checkout cancelled", "Nothing was charged. You can close this page.")


def credit_for(amount_cents: int, bonus_percent: int) -> int:
    """Micro-dollars credited for a checkout of `amount_cents` with `bonus_percent` (rounded down)."""
    paid = amount_cents * MICROS_PER_CENT
    return paid + paid * bonus_percent // 100


def _stripe(gateway: Gateway) -> StripeGateway:
    if gateway.stripe is None:
        raise ApiError(
            503,
            "billing_not_configured",
            "this gateway takes no payments (no STRIPE_API_KEY); its operator can grant credit with `voxrouter admin grant-credit`",
        )
    return gateway.stripe


async def _customer(gateway: Gateway, stripe: StripeGateway, org_id: str) -> str:
    """The organization's Stripe customer, created on its first billing call."""
    found = await gateway.store.billing_customer(org_id)
    if found is not None:
        return found
    created = await _paying(stripe.create_customer(org_id))
    return await gateway.store.save_billing_customer(org_id, created)


def _idempotency_key(org_id: str, client_key: str) -> str:
    """Stripe's keys are shared by the whole Stripe account: scope the client's to its organization
    (two organizations may pick the same key) and hash it (any text becomes a header-safe value)."""
    digest = hashlib.sha256(client_key.encode("utf-8")).hexdigest()
    return f"voxrouter-topup-{org_id}-{digest}"


def _check_amount(cents: int, low: int, high: int) -> None:
    if not low <= cents <= high:
        raise ApiError(400, "invalid_body", f"amountCents: must be from {low} to {high} ({_usd(low)} to {_usd(high)})")


def _usd(cents: int) -> str:
    return f"${cents // 100:,}.{cents % 100:02d}"


async def _paying(call: Awaitable[T]) -> T:
    """Await a Stripe call, its failure as the wire error."""
    try:
        return await call
    except PaymentError as exc:
        status, code = _ERRORS[exc.kind]
        suffix = f" (payment {exc.payment_intent_id})" if exc.payment_intent_id else ""
        raise ApiError(status, code, f"{exc.message}{suffix}") from None


def _page(title: str, text: str) -> HTMLResponse:
    title, text = html.escape(title), html.escape(text)
    return HTMLResponse(
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>'
        f"<body><h1>{title}</h1><p>{text}</p></body></html>"
    )


_BILLING_NOTES = (
    (400, "invalid_body (amountCents outside the configured bounds included)"),
    (502, "upstream_error: Stripe failed or could not be reached"),
    (503, "billing_not_configured: the gateway has no STRIPE_API_KEY"),
)
_STRIPE_SIGNATURE = {
    "name": "Stripe-Signature",
    "in": "header",
    "required": True,
    "schema": {"type": "string"},
    "description": "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<raw body>' keyed with the webhook secret>",
}

ROUTES = [
    ApiRoute("/v1/billing/methods", list_methods, method="GET", operation=Operation(
        "listPaymentMethods", "The organization's saved cards (Stripe).", ("array", schemas.PaymentMethodOut),
        errors=(401, 500, 502, 503), security=SESSION, notes=_BILLING_NOTES, retry_after=(),
    )),
    ApiRoute("/v1/billing/topup", topup, method="POST", operation=Operation(
        "topUp", "Charge a saved card off-session; the webhook credits the wallet once the payment succeeds.", schemas.TopupOut,
        body=schemas.TopupRequest, errors=(400, 401, 402, 404, 409, 413, 500, 502, 503), security=SESSION,
        notes=(*_BILLING_NOTES, (402, "stripe_3ds_required (the card needs its holder: use checkout) or card_declined"),
               (404, "not_found: no such saved card in the organization"),
               (409, "conflict: the idempotencyKey was used before with another amount or card")),
        retry_after=(),
    )),
    ApiRoute("/v1/billing/checkout", checkout, method="POST", operation=Operation(
        "createCheckout", "A Stripe Checkout page to buy credits in the browser, with the bonus of the amount's tier.",
        schemas.CheckoutOut, body=schemas.CheckoutRequest, errors=(400, 401, 413, 500, 502, 503), security=SESSION,
        notes=_BILLING_NOTES, retry_after=(),
    )),
    ApiRoute("/v1/billing/webhook", webhook, method="POST", operation=Operation(
        "stripeWebhook", "Stripe's events, authenticated by the Stripe-Signature header; credits and reversals apply once.",
        schemas.WebhookOut, errors=(400, 413, 500, 503), security=(), query=(_STRIPE_SIGNATURE,),
        notes=((400, "invalid_signature (missing, wrong or older than the tolerance; nothing is done) or invalid_body"),
               (503, "billing_not_configured: no STRIPE_WEBHOOK_SECRET")),
        retry_after=(),
    )),
    # Where Stripe Checkout sends the browser back (config billing.success_url / cancel_url): pages, not API.
    Route("/billing/success", checkout_success, methods=["GET"], include_in_schema=False),
    Route("/billing/cancel", checkout_cancel, methods=["GET"], include_in_schema=False),
]
