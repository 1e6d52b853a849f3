"""Loopback emulator of the few Stripe API calls billing makes, on Stripe's own wire: form-encoded
bodies with bracketed keys (`metadata[org_id]=...`, `line_items[0][quantity]=1`), `Bearer sk_...`
auth, `Idempotency-Key` replays, and errors as `{"error": {"type", "code", "message", ...}}`
(card errors with 402 and the failed payment intent).

Test cards are payment methods named as Stripe's test tokens; attaching one to a customer makes
a new `pm_...` with that card's behaviour:

    pm_card_visa, pm_card_mastercard       succeed
    pm_card_authenticationRequired         402 authentication_required off-session
    pm_card_threeDSecure2Required          the intent stops at requires_action
    pm_card_chargeDeclined                 402 card_declined (generic_decline)
    pm_card_chargeDeclinedInsufficientFunds  402 card_declined (insufficient_funds)

`StripeState` also plays Stripe's side of what happens off the API (a customer paying on the
Checkout page, refunds, disputes) and builds the events; `sign` signs them as Stripe does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

API_VERSION = "2025-09-30.clover"

# token -> (brand, last4, behaviour, decline_code)
TEST_CARDS: dict[str, tuple[str, str, str, str | None]] = {
    "pm_card_visa": ("visa", "4242", "succeed", None),
    "pm_card_mastercard": ("mastercard", "4444", "succeed", None),
    "pm_card_authenticationRequired": ("visa", "3155", "authentication_required", None),
    "pm_card_threeDSecure2Required": ("visa", "3220", "requires_action", None),
    "pm_card_chargeDeclined": ("visa", "0002", "declined", "generic_decline"),
    "pm_card_chargeDeclinedInsufficientFunds": ("visa", "9995", "declined", "insufficient_funds"),
}


def sign(payload: str | bytes, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "t.payload")>`."""
    text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode("utf-8"), f"{t}.{text}".encode("utf-8"), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def _new(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


@dataclasses.dataclass
class Call:
    method: str
    path: str
    params: dict[str, Any]
    idempotency_key: str | None
    replayed: bool = False


@dataclasses.dataclass
class StripeState:
    api_key: str
    customers: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    payment_methods: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    behaviours: dict[str, tuple[str, str | None]] = dataclasses.field(default_factory=dict)  # pm id -> (behaviour, decline code)
    payment_intents: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    calls: list[Call] = dataclasses.field(default_factory=list)
    fail_status: int | None = None  # answer every API call with this status (a Stripe outage)
    intents_created: int = 0  # by POST /v1/payment_intents (replays and refusals make none)
    _idempotent: dict[str, tuple[str, dict[str, Any], int, Any]] = dataclasses.field(default_factory=dict)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    # --- what happens on Stripe's side, off the API ------------------------------------------

    def attach(self, token: str, customer_id: str) -> dict[str, Any]:
        """A test card saved to a customer (as a SetupIntent or a checkout would)."""
        brand, last4, behaviour, decline_code = TEST_CARDS[token]
        method = {
            "id": _new("pm"),
            "object": "payment_method",
            "type": "card",
            "card": {"brand": brand, "last4": last4, "exp_month": 12, "exp_year": 2034, "funding": "credit", "country": "US"},
            "customer": customer_id,
            "created": int(time.time()),
            "livemode": False,
            "metadata": {},
        }
        with self._lock:
            self.payment_methods[method["id"]] = method
            self.behaviours[method["id"]] = (behaviour, decline_code)
        return method

    def complete_checkout(self, session_id: str, token: str = "pm_card_visa") -> dict[str, Any]:
        """The customer pays on the Checkout page: a payment intent succeeds (and the card is saved)."""
        session = self.sessions[session_id]
        data = session["_payment_intent_data"]
        method = self.attach(token, session["customer"]) if data.get("setup_future_usage") else None
        intent = self._succeeded_intent(
            session["amount_total"], session["customer"], method["id"] if method else None, data.get("metadata", {})
        )
        session.update(status="complete", payment_status="paid", payment_intent=intent["id"])
        return self.public(session)

    def refund(self, payment_intent_id: str, cents: int) -> dict[str, Any]:
        """Refund `cents` more of the intent's charge; the charge, as `charge.refunded` carries it."""
        charge = self.charges[self.payment_intents[payment_intent_id]["latest_charge"]]
        charge["amount_refunded"] = min(charge["amount"], charge["amount_refunded"] + cents)
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        return dict(charge)

    def dispute(self, payment_intent_id: str, cents: int | None = None) -> dict[str, Any]:
        intent = self.payment_intents[payment_intent_id]
        return {
            "id": _new("du"),
            "object": "dispute",
            "amount": intent["amount"] if cents is None else cents,
            "currency": "usd",
            "charge": intent["latest_charge"],
            "payment_intent": payment_intent_id,
            "reason": "fraudulent",
            "status": "needs_response",
            "created": int(time.time()),
            "livemode": False,
        }

    @staticmethod
    def event(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": _new("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }

    @staticmethod
    def public(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if not k.startswith("_")}

    def _succeeded_intent(self, amount: int, customer: str | None, method: str | None, metadata: dict[str, Any]) -> dict[str, Any]:
        intent = self._intent(amount, customer, method, metadata, "succeeded")
        charge_id = _new("ch")
        self.charges[charge_id] = {
            "id": charge_id,
            "object": "charge",
            "amount": amount,
            "amount_captured": amount,
            "amount_refunded": 0,
            "currency": "usd",
            "customer": customer,
            "payment_intent": intent["id"],
            "payment_method": method,
            "paid": True,
            "refunded": False,
            "status": "succeeded",
            "created": int(time.time()),
            "livemode": False,
            "metadata": {},
        }
        intent.update(latest_charge=charge_id, amount_received=amount)
        return intent

    def _intent(self, amount: int, customer: str | None, method: str | None, metadata: dict[str, Any], status: str) -> dict[str, Any]:
        intent = {
            "id": _new("pi"),
            "object": "payment_intent",
            "amount": amount,
            "amount_received": 0,
            "currency": "usd",
            "customer": customer,
            "payment_method": method,
            "metadata": dict(metadata),
            "status": status,
            "latest_charge": None,
            "last_payment_error": None,
            "created": int(time.time()),
            "livemode": False,
        }
        self.payment_intents[intent["id"]] = intent
        return intent


# --- the wire -----------------------------------------------------------------------------------


def decode_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's bracketed form keys into nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _lists(root)


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _lists(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def _error(status: int, type_: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "message": message, **extra}}, status_code=status)


def _missing(kind: str, object_id: str, param: str) -> JSONResponse:
    return _error(404, "invalid_request_error", f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, str) and value.isdigit() else None


def create_app(state: StripeState) -> Starlette:
    async def handle(request: Request) -> Response:
        body = (await request.body()).decode("utf-8")
        params = decode_form(parse_qsl(body if request.method == "POST" else request.url.query, keep_blank_values=True))
        key = request.headers.get("idempotency-key") if request.method == "POST" else None
        call = Call(request.method, request.url.path, params, key)
        with state._lock:
            state.calls.append(call)
        if request.headers.get("authorization") != f"Bearer {state.api_key}":
            return _error(401, "invalid_request_error", "Invalid API Key provided: sk_test_****")
        if state.fail_status:
            return _error(state.fail_status, "api_error", "An unknown error occurred")
        if key is not None:
            with state._lock:
                seen = state._idempotent.get(key)
            if seen is not None:
                path, first_params, status, answer = seen
                if (path, first_params) != (request.url.path, params):
                    return _error(
                        400,
                        "idempotency_error",
                        f"Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request.",
                    )
                call.replayed = True
                return JSONResponse(answer, status_code=status, headers={"Idempotent-Replayed": "true"})
        response = route(request.method, request.url.path, params)
        if key is not None:
            with state._lock:
                state._idempotent[key] = (request.url.path, params, response.status_code, json.loads(response.body))
        return response

    def route(method: str, path: str, params: dict[str, Any]) -> JSONResponse:
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/v1/customers":
            return create_customer(params)
        if method == "GET" and len(parts) == 4 and parts[:2] == ["v1", "customers"] and parts[3] == "payment_methods":
            return list_methods(parts[2], params)
        if method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "payment_methods"]:
            found = state.payment_methods.get(parts[2])
            return JSONResponse(found) if found else _missing("PaymentMethod", parts[2], "payment_method")
        if method == "POST" and len(parts) == 4 and parts[:2] == ["v1", "payment_methods"] and parts[3] == "attach":
            return attach(parts[2], params)
        if method == "POST" and path == "/v1/payment_intents":
            return create_intent(params)
        if method == "POST" and path == "/v1/checkout/sessions":
            return create_session(params)
        return _error(404, "invalid_request_error", f"Unrecognized request URL ({method}: {path}).")

    def create_customer(params: dict[str, Any]) -> JSONResponse:
        customer = {
            "id": _new("cus"),
            "object": "customer",
            "description": params.get("description"),
            "email": params.get("email"),
            "metadata": params.get("metadata", {}),
            "created": int(time.time()),
            "livemode": False,
        }
        state.customers[customer["id"]] = customer
        return JSONResponse(customer)

    def list_methods(customer_id: str, params: dict[str, Any]) -> JSONResponse:
        if customer_id not in state.customers:
            return _missing("customer", customer_id, "customer")
        limit = _int(params.get("limit", "10"))
        if limit is None or not 1 <= limit <= 100:
            return _error(400, "invalid_request_error", "Invalid integer: limit", param="limit")
        methods = [
            m for m in state.payment_methods.values() if m["customer"] == customer_id and params.get("type", m["type"]) == m["type"]
        ]
        methods.sort(key=lambda m: m["created"], reverse=True)
        return JSONResponse(
            {"object": "list", "data": methods[:limit], "has_more": len(methods) > limit, "url": f"/v1/customers/{customer_id}/payment_methods"}
        )

    def attach(token: str, params: dict[str, Any]) -> JSONResponse:
        customer_id = params.get("customer")
        if customer_id not in state.customers:
            return _missing("customer", str(customer_id), "customer")
        if token not in TEST_CARDS:
            return _missing("PaymentMethod", token, "payment_method")
        return JSONResponse(state.attach(token, customer_id))

    def create_intent(params: dict[str, Any]) -> JSONResponse:
        amount, customer_id, method_id = _int(params.get("amount")), params.get("customer"), params.get("payment_method")
        if amount is None or amount < 50:
            return _error(400, "invalid_request_error", "Amount must be at least $0.50 usd", code="amount_too_small", param="amount")
        if params.get("currency") != "usd":
            return _error(400, "invalid_request_error", "Invalid currency", param="currency")
        if customer_id not in state.customers:
            return _missing("customer", str(customer_id), "customer")
        method = state.payment_methods.get(str(method_id))
        if method is None:
            return _missing("PaymentMethod", str(method_id), "payment_method")
        if method["customer"] != customer_id:
            return _error(
                400, "invalid_request_error", f"The provided PaymentMethod {method_id} does not belong to the Customer {customer_id}.", param="payment_method"
            )
        state.intents_created += 1
        if params.get("confirm") != "true":
            return JSONResponse(state._intent(amount, customer_id, method_id, params.get("metadata", {}), "requires_confirmation"))
        behaviour, decline_code = state.behaviours[method["id"]]
        metadata = params.get("metadata", {})
        if behaviour == "succeed":
            return JSONResponse(state._succeeded_intent(amount, customer_id, method["id"], metadata))
        if behaviour == "requires_action":
            return JSONResponse(state._intent(amount, customer_id, method["id"], metadata, "requires_action"))
        if behaviour == "authentication_required" and params.get("off_session") != "true":
            return JSONResponse(state._intent(amount, customer_id, method["id"], metadata, "requires_action"))
        intent = state._intent(amount, customer_id, method["id"], metadata, "requires_payment_method")
        if behaviour == "authentication_required":
            code, message = "authentication_required", "This payment required an authentication action to complete, but `off_session` was set."
            decline_code = "authentication_required"
        else:
            code, message = "card_declined", "Your card was declined."
        error = {"type": "card_error", "code": code, "decline_code": decline_code, "message": message, "payment_method": method}
        intent["last_payment_error"] = error
        return _error(402, "card_error", message, code=code, decline_code=decline_code, payment_intent=intent, payment_method=method)

    def create_session(params: dict[str, Any]) -> JSONResponse:
        if params.get("mode") != "payment":
            return _error(400, "invalid_request_error", "mode must be payment here", param="mode")
        for field in ("success_url", "cancel_url"):
            if not params.get(field):
                return _error(400, "invalid_request_error", f"Missing required param: {field}.", param=field)
        items = params.get("line_items")
        if not isinstance(items, list) or not items:
            return _error(400, "invalid_request_error", "Missing required param: line_items.", param="line_items")
        total = 0
        for item in items:
            price = item.get("price_data", {})
            unit, quantity = _int(price.get("unit_amount")), _int(item.get("quantity"))
            if unit is None or quantity is None or price.get("currency") != "usd" or not price.get("product_data", {}).get("name"):
                return _error(400, "invalid_request_error", "Invalid line_items", param="line_items")
            total += unit * quantity
        customer_id = params.get("customer")
        if customer_id is not None and customer_id not in state.customers:
            return _missing("customer", str(customer_id), "customer")
        session_id = f"cs_test_{uuid.uuid4().hex}"
        session = {
            "id": session_id,
            "object": "checkout.session",
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
            "mode": "payment",
            "amount_total": total,
            "amount_subtotal": total,
            "currency": "usd",
            "customer": customer_id,
            "client_reference_id": params.get("client_reference_id"),
            "metadata": params.get("metadata", {}),
            "payment_status": "unpaid",
            "status": "open",
            "payment_intent": None,
            "success_url": params["success_url"],
            "cancel_url": params["cancel_url"],
            "created": int(time.time()),
            "livemode": False,
            "_payment_intent_data": params.get("payment_intent_data", {}),
        }
        state.sessions[session_id] = session
        return JSONResponse(state.public(session))

    return Starlette(routes=[Route("/v1/{path:path}", handle, methods=["GET", "POST"])])
