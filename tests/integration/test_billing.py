"""Billing with Stripe, against a loopback Stripe emulator: saved cards, off-session top-ups
(3-D Secure, declines, idempotent retries), checkout with bonus tiers, and the signed webhook
that credits each payment exactly once, in any order, and takes refunds and disputes back."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.conftest import Emulator, Gateway, emulated_config, running_gateway
from tests.databases import fresh_database, query
from tests.emulators import stripe_emu
from tests.emulators.server import LoopbackServer
from tests.emulators.stripe_emu import StripeState, sign
from tests.integration.test_openapi import _check
from voxrouter.router.http.app import create_app
from voxrouter.router.settings import Settings
from voxrouter.router.store import open_store

PASSWORD = "correct horse battery"
WEBHOOK_SECRET = f"whsec_test_{uuid.uuid4().hex}"


@dataclasses.dataclass
class Stripe:
    state: StripeState
    server: LoopbackServer


@dataclasses.dataclass
class Account:
    org_id: str
    session: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.session}"}


@pytest.fixture(scope="module")
def stripe() -> Iterator[Stripe]:
    state = StripeState(api_key=f"sk_test_{uuid.uuid4().hex}")
    with LoopbackServer(stripe_emu.create_app(state)) as server:
        yield Stripe(state, server)


@pytest.fixture(scope="module")
def billing(
    emulators: dict[str, Emulator], database_engine: str, tmp_path_factory: pytest.TempPathFactory, stripe: Stripe
) -> Iterator[Gateway]:
    """A gateway with Stripe configured, one per database engine (each test uses new organizations)."""
    config = emulated_config(emulators)
    config = config.model_copy(update={"billing": config.billing.model_copy(update={"max_network_retries": 0})})
    tmp = tmp_path_factory.mktemp("billing")
    with fresh_database(database_engine, tmp) as url:
        settings = Settings(
            database_url=url,
            config=config,
            stripe_api_key=stripe.state.api_key,
            stripe_webhook_secret=WEBHOOK_SECRET,
            stripe_api_base=stripe.server.url,
        )
        with LoopbackServer(create_app(settings), lifespan="on") as server:
            yield Gateway(server, settings)


# --- helpers ------------------------------------------------------------------------------------


def _account(gateway: Gateway) -> Account:
    email = f"b{uuid.uuid4().hex[:10]}@example.com"
    response = httpx.post(gateway.url + "/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return Account(response.json()["org_id"], response.json()["session_token"])


def _customer(gateway: Gateway, account: Account) -> str:
    """The organization's Stripe customer (made by its first billing call)."""
    assert httpx.get(gateway.url + "/v1/billing/methods", headers=account.headers).status_code == 200
    rows = query(gateway.settings.database_url, "SELECT stripe_customer_id FROM billing_customers WHERE org_id = ?", account.org_id)
    return rows[0][0]


def _save_card(gateway: Gateway, stripe: Stripe, account: Account, token: str = "pm_card_visa") -> str:
    return stripe.state.attach(token, _customer(gateway, account))["id"]


def _topup(gateway: Gateway, account: Account, cents: int, method: str, key: str | None = None) -> httpx.Response:
    body = {"amountCents": cents, "paymentMethodId": method, "idempotencyKey": key or uuid.uuid4().hex}
    return httpx.post(gateway.url + "/v1/billing/topup", json=body, headers=account.headers, timeout=10)


def _deliver(gateway: Gateway, event: dict[str, Any] | bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> httpx.Response:
    payload = event if isinstance(event, bytes) else json.dumps(event).encode()
    headers = {"Stripe-Signature": sign(payload, secret, timestamp), "Content-Type": "application/json"}
    return httpx.post(gateway.url + "/v1/billing/webhook", content=payload, headers=headers, timeout=10)


def _received(response: httpx.Response) -> None:
    assert response.status_code == 200 and response.json() == {"received": True}, response.text


def _balance(gateway: Gateway, account: Account) -> int:
    return query(gateway.settings.database_url, "SELECT balance_micros FROM wallets WHERE org_id = ?", account.org_id)[0][0]


def _ledger(gateway: Gateway, account: Account) -> list[tuple[str, int, int, str, str | None]]:
    return query(
        gateway.settings.database_url,
        "SELECT kind, micros_delta, micros_balance_after, source, note FROM ledger WHERE org_id = ? ORDER BY id",
        account.org_id,
    )


def _paid_topup(gateway: Gateway, stripe: Stripe, account: Account, cents: int) -> str:
    """A top-up whose payment succeeded at Stripe (not yet credited: no webhook delivered)."""
    response = _topup(gateway, account, cents, _save_card(gateway, stripe, account))
    assert response.status_code == 200 and response.json()["status"] == "succeeded", response.text
    return response.json()["payment_intent_id"]


def _succeeded(stripe: Stripe, intent_id: str) -> dict[str, Any]:
    return stripe.state.event("payment_intent.succeeded", dict(stripe.state.payment_intents[intent_id]))


def _paid_checkout(gateway: Gateway, stripe: Stripe, account: Account, cents: int) -> dict[str, Any]:
    response = httpx.post(gateway.url + "/v1/billing/checkout", json={"amountCents": cents}, headers=account.headers, timeout=10)
    assert response.status_code == 200, response.text
    return stripe.state.complete_checkout(response.json()["id"])


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status and response.json()["error"] == code, response.text


# --- configuration ------------------------------------------------------------------------------


def test_without_stripe_billing_answers_503(emulators, tmp_path: Path, database_url: str):
    with running_gateway(tmp_path, emulated_config(emulators), database_url) as gateway:
        account = _account(gateway)
        assert httpx.get(gateway.url + "/v1/billing/methods").status_code == 401  # the session comes first
        _error(httpx.get(gateway.url + "/v1/billing/methods", headers=account.headers), 503, "billing_not_configured")
        topup = _topup(gateway, account, 2_000, "pm_123")
        _error(topup, 503, "billing_not_configured")
        assert "grant-credit" in topup.json()["details"]
        checkout = httpx.post(gateway.url + "/v1/billing/checkout", json={"amountCents": 2_000}, headers=account.headers)
        _error(checkout, 503, "billing_not_configured")
        _error(_deliver(gateway, StripeState.event("payment_intent.succeeded", {})), 503, "billing_not_configured")
        # A request that is not a Stripe delivery at all is refused as such.
        _error(httpx.post(gateway.url + "/v1/billing/webhook", content=b"{}"), 400, "invalid_signature")
        for response, path, method in ((topup, "/v1/billing/topup", "post"), (checkout, "/v1/billing/checkout", "post")):
            _check(response, path, method)


def test_billing_routes_take_a_session_not_an_api_key(billing: Gateway):
    key = billing.new_key(1.0)
    response = httpx.get(billing.url + "/v1/billing/methods", headers={"Authorization": f"Bearer {key}"})
    _error(response, 401, "unauthorized")


# --- saved cards --------------------------------------------------------------------------------


def test_saved_cards_are_the_customers_first_five(billing: Gateway, stripe: Stripe):
    account = _account(billing)
    first = httpx.get(billing.url + "/v1/billing/methods", headers=account.headers)
    assert first.status_code == 200 and first.json() == []
    _check(first, "/v1/billing/methods")
    customer = _customer(billing, account)  # the same customer on every call
    assert stripe.state.customers[customer]["metadata"] == {"org_id": account.org_id}
    assert [c for c in stripe.state.customers.values() if c["metadata"].get("org_id") == account.org_id] == [stripe.state.customers[customer]]
    for token in ("pm_card_visa", "pm_card_mastercard", "pm_card_visa", "pm_card_chargeDeclined", "pm_card_visa", "pm_card_visa"):
        stripe.state.attach(token, customer)
    response = httpx.get(billing.url + "/v1/billing/methods", headers=account.headers)
    methods = response.json()
    _check(response, "/v1/billing/methods")
    assert len(methods) == 5
    assert all(set(m) == {"id", "brand", "last4", "expMonth", "expYear"} for m in methods)
    assert {(m["brand"], m["last4"]) for m in methods} <= {("visa", "4242"), ("mastercard", "4444"), ("visa", "0002")}
    assert all(m["id"].startswith("pm_") and m["expMonth"] == 12 and m["expYear"] == 2034 for m in methods)
    # Another organization sees none of them.
    assert httpx.get(billing.url + "/v1/billing/methods", headers=_account(billing).headers).json() == []


# --- top-ups and the webhook --------------------------------------------------------------------


def test_topup_then_webhook_credits_exactly_once(billing: Gateway, stripe: Stripe):
    account = _account(billing)
    method = _save_card(billing, stripe, account)
    response = _topup(billing, account, 2_500, method)
    assert response.status_code == 200, response.text
    _check(response, "/v1/billing/topup", "post")
    intent_id = response.json()["payment_intent_id"]
    assert response.json() == {"payment_intent_id": intent_id, "status": "succeeded"}
    (call,) = [c for c in stripe.state.calls if c.path == "/v1/payment_intents" and c.params.get("payment_method") == method]
    assert call.params | {"metadata": None} == {
        "amount": "2500",
        "currency": "usd",
        "customer": _customer(billing, account),
        "payment_method": method,
        "payment_method_types": ["card"],
        "confirm": "true",
        "off_session": "true",
        "description": "VoxRouter credits",
        "metadata": None,
    }
    assert call.params["metadata"] == {"org_id": account.org_id, "kind": "topup"}
    assert _balance(billing, account) == 0  # the route never credits: the webhook does

    event = _succeeded(stripe, intent_id)
    delivered = _deliver(billing, event)
    _received(delivered)
    _check(delivered, "/v1/billing/webhook", "post")
    assert _balance(billing, account) == 25_000_000
    assert _ledger(billing, account) == [("topup", 25_000_000, 25_000_000, "stripe", intent_id)]

    payload = json.dumps(event).encode()
    replay = {"Stripe-Signature": sign(payload, WEBHOOK_SECRET), "Content-Type": "application/json"}
    for _ in range(2):  # the very same delivery again, and Stripe's redelivery with a fresh signature
        _received(httpx.post(billing.url + "/v1/billing/webhook", content=payload, headers=replay))
        _received(_deliver(billing, event))
    assert _balance(billing, account) == 25_000_000
    assert len(_ledger(billing, account)) == 1


def test_concurrent_deliveries_of_one_event_credit_once(billing: Gateway, stripe: Stripe):
    account = _account(billing)
    event = _succeeded(stripe, _paid_topup(billing, stripe, account, 1_000))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: _deliver(billing, event), range(8)))
    for response in responses:
        _received(response)
    assert _balance(billing, account) == 10_000_000
    assert [row[0] for row in _ledger(billing, account)] == ["topup"]


def test_checkout_and_its_payment_intent_credit_once_in_either_order(billing: Gateway, stripe: Stripe):
    for session_first in (True, False):
        account = _account(billing)
        session = _paid_checkout(billing, stripe, account, 2_000)
        intent = stripe.state.payment_intents[session["payment_intent"]]
        assert intent["metadata"] == {"org_id": account.org_id, "kind": "checkout"}
        events = [
            stripe.state.event("checkout.session.completed", session),
            stripe.state.event("payment_intent.succeeded", dict(intent)),
        ]
        for event in events if session_first else events[::-1]:
            _received(_deliver(billing, event))
        _received(_deliver(billing, events[0]))
        assert _balance(billing, account) == 22_000_000
        assert _ledger(billing, account) == [("topup", 22_000_000, 22_000_000, "stripe", intent["id"])]


def test_a_refund_that_arrives_before_its_payment_is_applied_with_it(billing: Gateway, stripe: Stripe):
    account = _account(billing)
    intent_id = _paid_topup(billing, stripe, account, 4_000)
    early_refund = stripe.state.event("charge.refunded", stripe.state.refund(intent_id, 1_000))
    _received(_deliver(billing, early_refund))
    assert _balance(billing, account) == 0 and _ledger(billing, account) == []  # nothing to take back yet
    _received(_deliver(billing, _succeeded(stripe, intent_id)))
    assert _balance(billing, account) == 30_000_000
    assert [row[:3] for row in _ledger(billing, account)] == [("topup", 40_000_000, 40_000_000), ("stripe_refund", -10_000_000, 30_000_000)]
    _received(_deliver(billing, early_refund))
    assert _balance(billing, account) == 30_000_000


def test_partial_refunds_out_of_order_take_back_their_total(billing: Gateway, stripe: Stripe):
    account = _account(billing)
    intent_id = _paid_topup(billing, stripe, account, 5_000)
    _received(_deliver(billing, _succeeded(stripe, intent_id)))
    first = stripe.state.event("charge.refunded", stripe.state.refund(intent_id, 1_000))  # 10 dollars refunded in all
    second = stripe.state.event("charge.refunded", stripe.state.refund(intent_id, 1_500))  # 25 in all
    for event in (second, first, second, first):
        _received(_deliver(billing, event))
    assert _balance(billing, account) == 25_000_000
    assert [row[:2] for row in _ledger(billing, account)] == [("topup", 50_000_000), ("stripe_refund", -25_000_000)]


@pytest.mark.parametrize("problem", ["forged", "missing", "stale", "tampered", "garbage"])
def test_bad_signatures_are_refused_and_change_nothing(billing: Gateway, stripe: Stripe, problem: str):
    account = _account(billing)
    payload = json.dumps(_succeeded(stripe, _paid_topup(billing, stripe, account, 1_000))).encode()
    headers = {"Content-Type": "application/json", "Stripe-Signature": sign(payload, WEBHOOK_SECRET)}
    if problem == "forged":
        headers["Stripe-Signature"] = sign(payload, "whsec_someone_else")
    elif problem == "missing":
        del headers["Stripe-Signature"]
    elif problem == "stale":
        headers["Stripe-Signature"] = sign(payload, WEBHOOK_SECRET, int(time.time()) - 301)
    elif problem == "tampered":
        payload = payload.replace(b'"amount_received": 1000', b'"amount_received": 100000')
    else:
        headers["Stripe-Signature"] = "t=abc,v2=zz"
    response = httpx.post(billing.url + "/v1/billing/webhook", content=payload, headers=headers)
    _error(response, 400, "invalid_signature")
    _check(response, "/v1/billing/webhook", "post")
    assert _balance(billing, account) == 0 and _ledger(billing, account) == []
    # A timestamp just inside the tolerance is accepted.
    _received(_deliver(billing, json.loads(payload), timestamp=int(time.time()) - 280))
    assert _balance(billing, account) == (1_000_000_000 if problem == "tampered" else 10_000_000)


def test_other_events_are_acknowledged_and_ignored(billing: Gateway, stripe: Stripe):
    account = _account(billing)
    intent_id = _paid_topup(billing, stripe, account, 1_000)
    intent = dict(stripe.state.payment_intents[intent_id])
    ignored = [
        stripe.state.event("customer.created", {"id": "cus_1", "object": "customer"}),
        stripe.state.event("payment_intent.created", intent),
        stripe.state.event("payment_intent.succeeded", intent | {"metadata": {}}),  # not one of ours
        stripe.state.event("payment_intent.succeeded", intent | {"id": "pi_other", "metadata": {"org_id": "org_nope", "kind": "topup"}}),
    ]
    for event in ignored:
        _received(_deliver(billing, event))
    assert _balance(billing, account) == 0
    malformed = stripe.state.event("payment_intent.succeeded", intent | {"amount_received": "1000"})
    _error(_deliver(billing, malformed), 400, "invalid_body")
    _error(_deliver(billing, b"not json"), 400, "invalid_body")
    assert _balance(billing, account) == 0


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("pm_card_chargeDeclined", "card_declined"),
        ("pm_card_chargeDeclinedInsufficientFunds", "card_declined"),
        ("pm_card_authenticationRequired", "stripe_3ds_required"),
        ("pm_card_threeDSecure2Required", "stripe_3ds_required"),
    ],
)
def test_cards_that_decline_or_need_their_holder_are_402(billing: Gateway, stripe: Stripe, token: str, code: str):
    account = _account(billing)
    response = _topup(billing, account, 2_000, _save_card(billing, stripe, account, token))
    _error(response, 402, code)
    _check(response, "/v1/billing/topup", "post")
    assert "pi_" in response.json()["details"]
    assert _balance(billing, account) == 0


def test_a_retried_topup_charges_once(billing: Gateway, stripe: Stripe):
    account = _account(billing)
    method = _save_card(billing, stripe, account)
    before = stripe.state.intents_created
    first = _topup(billing, account, 3_000, method, key="retry-me")
    again = _topup(billing, account, 3_000, method, key="retry-me")
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    assert stripe.state.intents_created == before + 1
    keys = {c.idempotency_key for c in stripe.state.calls if c.path == "/v1/payment_intents" and c.params["payment_method"] == method}
    assert len(keys) == 1 and "retry-me" not in keys.pop()  # scoped to the organization and hashed
    _error(_topup(billing, account, 4_000, method, key="retry-me"), 409, "conflict")  # same key, other amount
    assert _topup(billing, account, 3_000, method, key="another").json()["payment_intent_id"] != first.json()["payment_intent_id"]
    # Another organization may pick the same key: it is its own.
    other = _account(billing)
    theirs = _topup(billing, other, 3_000, _save_card(billing, stripe, other), key="retry-me")
    assert theirs.status_code == 200 and theirs.json()["payment_intent_id"] != first.json()["payment_intent_id"]
    assert stripe.state.intents_created == before + 3
    # A declined payment retried with its key is the same decline, not a second attempt.
    declined = _save_card(billing, stripe, account, "pm_card_chargeDeclined")
    assert _topup(billing, account, 2_000, declined, key="d").json() == _topup(billing, account, 2_000, declined, key="d").json()
    assert stripe.state.intents_created == before + 4


@pytest.mark.parametrize(
    "body",
    [
        {"amountCents": 999},
        {"amountCents": 100_001},
        {"amountCents": 0},
        {"amountCents": -1_000},
        {"amountCents": 1_000.5},
        {"amountCents": "1000"},
        {"amountCents": True},
        {"amountCents": 1e20},
        {"idempotencyKey": ""},
        {"idempotencyKey": "k" * 256},
        {"idempotencyKey": None},
        {"paymentMethodId": "card_123"},
        {"paymentMethodId": "pm_../../v1/customers"},
        {"extra": 1},
    ],
)
def test_topup_bodies_out_of_bounds_are_400(billing: Gateway, stripe: Stripe, body: dict[str, Any]):
    account = _account(billing)
    good = {"amountCents": 1_000, "paymentMethodId": "pm_123", "idempotencyKey": "k"}
    response = httpx.post(billing.url + "/v1/billing/topup", json=good | body, headers=account.headers)
    _error(response, 400, "invalid_body")
    _check(response, "/v1/billing/topup", "post")


def test_topup_bounds_are_inclusive(billing: Gateway, stripe: Stripe):
    account = _account(billing)
    method = _save_card(billing, stripe, account)
    for cents in (1_000, 100_000, 5_000.0):  # JSON Schema's integer: 5000.0 is one too
        assert _topup(billing, account, cents, method).status_code == 200


def test_another_organizations_card_cannot_be_charged(billing: Gateway, stripe: Stripe):
    owner, intruder = _account(billing), _account(billing)
    method = _save_card(billing, stripe, owner)
    before = stripe.state.intents_created
    for candidate in (method, "pm_card_visa", "pm_doesnotexist"):
        response = _topup(billing, intruder, 2_000, candidate)
        _error(response, 404, "not_found")
        _check(response, "/v1/billing/topup", "post")
    assert stripe.state.intents_created == before


def test_a_stripe_outage_is_502(billing: Gateway, stripe: Stripe):
    account = _account(billing)
    stripe.state.fail_status = 500
    try:
        response = httpx.get(billing.url + "/v1/billing/methods", headers=account.headers)
    finally:
        stripe.state.fail_status = None
    _error(response, 502, "upstream_error")
    _check(response, "/v1/billing/methods")
    assert stripe.state.api_key not in response.text


# --- checkout -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cents", "bonus", "credit"),
    [(500, 0, 5_000_000), (1_999, 0, 19_990_000), (2_000, 10, 22_000_000), (5_000, 15, 57_500_000), (10_000, 20, 120_000_000), (100_000, 20, 1_200_000_000)],
)
def test_checkout_credits_amount_plus_bonus_once(billing: Gateway, stripe: Stripe, cents: int, bonus: int, credit: int):
    account = _account(billing)
    response = httpx.post(billing.url + "/v1/billing/checkout", json={"amountCents": cents}, headers=account.headers)
    assert response.status_code == 200, response.text
    _check(response, "/v1/billing/checkout", "post")
    out = response.json()
    assert out == {"id": out["id"], "url": f"https://checkout.stripe.com/c/pay/{out['id']}", "amountCents": cents, "bonusPercent": bonus, "creditMicros": credit}
    session = stripe.state.sessions[out["id"]]
    assert session["amount_total"] == cents and session["customer"] == _customer(billing, account)
    assert session["metadata"] == {"org_id": account.org_id, "kind": "checkout", "credit_micros": str(credit), "bonus_percent": str(bonus)}
    assert session["success_url"] == billing.url + "/billing/success?session_id={CHECKOUT_SESSION_ID}"
    assert session["cancel_url"] == billing.url + "/billing/cancel"
    (call,) = [c for c in stripe.state.calls if c.path == "/v1/checkout/sessions" and c.params.get("metadata", {}).get("org_id") == account.org_id]
    assert call.params["line_items"] == [{"quantity": "1", "price_data": {"currency": "usd", "unit_amount": str(cents), "product_data": {"name": "VoxRouter credits"}}}]

    unpaid = stripe.state.event("checkout.session.completed", stripe.state.public(session) | {"status": "complete"})
    _received(_deliver(billing, unpaid))  # completed but not paid yet (a bank debit): nothing
    assert _balance(billing, account) == 0
    completed = stripe.state.event("checkout.session.completed", stripe.state.complete_checkout(out["id"]))
    for _ in range(2):
        _received(_deliver(billing, completed))
    assert _balance(billing, account) == credit
    assert [row[:4] for row in _ledger(billing, account)] == [("topup", credit, credit, "stripe")]


def test_checkout_saves_the_card_for_topups(billing: Gateway, stripe: Stripe):
    account = _account(billing)
    _received(_deliver(billing, stripe.state.event("checkout.session.completed", _paid_checkout(billing, stripe, account, 5_000))))
    (card,) = httpx.get(billing.url + "/v1/billing/methods", headers=account.headers).json()
    response = _topup(billing, account, 1_000, card["id"])
    assert response.status_code == 200
    _received(_deliver(billing, _succeeded(stripe, response.json()["payment_intent_id"])))
    assert _balance(billing, account) == 57_500_000 + 10_000_000
    for page in ("/billing/success?session_id=cs_1", "/billing/cancel"):
        shown = httpx.get(billing.url + page)
        assert shown.status_code == 200 and shown.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("cents", [499, 100_001, 0])
def test_checkout_amounts_out_of_bounds_are_400(billing: Gateway, cents: int):
    response = httpx.post(billing.url + "/v1/billing/checkout", json={"amountCents": cents}, headers=_account(billing).headers)
    _error(response, 400, "invalid_body")


# --- refunds and disputes -----------------------------------------------------------------------


def test_refunds_and_disputes_take_credit_back_once_each(billing: Gateway, stripe: Stripe):
    account = _account(billing)
    session = _paid_checkout(billing, stripe, account, 2_000)  # 20 dollars paid, 22 credited
    intent_id = session["payment_intent"]
    _received(_deliver(billing, stripe.state.event("checkout.session.completed", session)))
    refund = stripe.state.event("charge.refunded", stripe.state.refund(intent_id, 1_000))  # half, bonus included
    dispute = stripe.state.event("charge.dispute.created", stripe.state.dispute(intent_id, 1_000))
    for event in (refund, dispute, refund, dispute):
        _received(_deliver(billing, event))
    assert _balance(billing, account) == 0
    assert [row[:4] for row in _ledger(billing, account)] == [
        ("topup", 22_000_000, 22_000_000, "stripe"),
        ("stripe_refund", -11_000_000, 11_000_000, "stripe"),
        ("chargeback", -11_000_000, 0, "stripe"),
    ]
    # Never more than the payment credited: a second dispute of the whole charge takes nothing.
    _received(_deliver(billing, stripe.state.event("charge.dispute.created", stripe.state.dispute(intent_id))))
    assert _balance(billing, account) == 0 and len(_ledger(billing, account)) == 3
    kinds = httpx.get(billing.url + "/v1/credits/activity", headers={"Authorization": f"Bearer {billing.new_key(0, org=_org_name(billing, account))}"})
    assert [row["kind"] for row in kinds.json()][:3] == ["chargeback", "stripe_refund", "topup"]
    _check(kinds, "/v1/credits/activity")


def test_a_refund_of_spent_credit_leaves_the_balance_negative(billing: Gateway, stripe: Stripe):
    account = _account(billing)
    intent_id = _paid_topup(billing, stripe, account, 1_000)
    _received(_deliver(billing, _succeeded(stripe, intent_id)))
    asyncio.run(_spend(billing.settings.database_url, account.org_id, 9_000_000))
    _received(_deliver(billing, stripe.state.event("charge.refunded", stripe.state.refund(intent_id, 1_000))))
    assert _balance(billing, account) == -9_000_000
    assert _ledger(billing, account)[-1][:3] == ("stripe_refund", -10_000_000, -9_000_000)


async def _spend(url: str, org_id: str, micros: int) -> None:
    store = await open_store(url)
    try:
        await store.topup(org_id, -micros, "admin", "spent")
    finally:
        await store.close()


def _org_name(gateway: Gateway, account: Account) -> str:
    return query(gateway.settings.database_url, "SELECT name FROM orgs WHERE id = ?", account.org_id)[0][0]


# --- the schema, fuzzed -------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "method"), [("/v1/billing/methods", "get"), ("/v1/billing/topup", "post"), ("/v1/billing/checkout", "post")])
def test_billing_operations_answer_as_documented(billing: Gateway, stripe: Stripe, path: str, method: str):
    """test_schema_fuzz.py's checks, on this gateway with Stripe behind it."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    from tests.integration.test_schema_fuzz import CHECKS, SCHEMA, _strategy

    account = _account(billing)
    card = _save_card(billing, stripe, account)
    operation = SCHEMA[path][method.upper()]
    strategies = [s for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if (s := _strategy(operation, mode)) is not None]
    seen: dict[str, set[int]] = {"positive": set(), "negative": set()}

    @settings(max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(case=st.one_of(strategies), data=st.data())
    def fuzz(case, data):
        positive = case.meta.generation.mode.is_positive
        if positive and path.endswith("topup") and data.draw(st.booleans(), label="real_card"):
            case.body["paymentMethodId"] = card
        response = case.call_and_validate(base_url=billing.url, headers=account.headers, checks=CHECKS, timeout=10)
        seen["positive" if positive else "negative"].add(response.status_code)

    fuzz()
    assert 200 in seen["positive"], seen
    if method == "post":
        assert seen["negative"] and all(400 <= code < 500 for code in seen["negative"]), seen


def test_a_session_logged_out_elsewhere_cannot_spend(billing: Gateway, stripe: Stripe):
    """Another replica logs the session out: this one still has it cached (auth.key_cache_ttl_s),
    but money routes check the database, so neither a top-up nor a checkout goes to Stripe."""
    import asyncio

    from voxrouter.router.accounts.auth import hash_secret
    from voxrouter.router.store import open_store

    account = _account(billing)
    method = _save_card(billing, stripe, account)  # the session is now in this replica's cache

    async def revoke_on_another_replica() -> None:
        store = await open_store(billing.settings.database_url)
        try:
            assert await store.revoke_session(hash_secret(account.session))
        finally:
            await store.close()

    asyncio.run(revoke_on_another_replica())
    calls = len(stripe.state.calls)
    assert _topup(billing, account, 2_500, method).status_code == 401
    checkout = httpx.post(billing.url + "/v1/billing/checkout", json={"amountCents": 2_000}, headers=account.headers, timeout=10)
    assert checkout.status_code == 401
    assert len(stripe.state.calls) == calls
