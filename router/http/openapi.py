"""Generate `openapi.yaml` from the routing table and the pydantic models.

    python -m voxrouter.router.http.openapi > openapi.yaml

A test fails when the committed file differs from what this prints, and another
validates live responses against it.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from voxrouter.router import schemas
from voxrouter.router.http.app import ROUTES

_ERRORS = {
    400: "invalid_body or invalid_model",
    401: "unauthorized",
    402: "insufficient_credit or spend_limit_exceeded",
    403: "forbidden or registration_closed",
    404: "not_found",
    409: "conflict",
    413: "invalid_body (body too large)",
    429: "rate_limited or concurrency_limited (Retry-After)",
    500: "internal_error",
    502: "upstream_error",
    503: "provider_unavailable (Retry-After: seconds until its circuit half-opens)",
    504: "upstream_error (deadline)",
}


@dataclasses.dataclass(frozen=True)
class Operation:
    operation_id: str
    summary: str
    response: type[BaseModel] | tuple[str, type[BaseModel]] | str  # model, ("array", model), or "audio"
    body: type[BaseModel] | None = None
    query: tuple[dict[str, Any], ...] = ()
    errors: tuple[int, ...] = (401, 500)
    security: tuple[str, ...] = ("apiKey",)  # any of these; () for public routes
    status: int = 200
    path_params: tuple[str, ...] = ()
    notes: tuple[tuple[int, str], ...] = ()  # error descriptions that differ from _ERRORS
    retry_after: tuple[int, ...] = (429, 503)  # error statuses that carry Retry-After


_SESSION = ("session",)
_ANY = ("apiKey", "session")
_POLL_400 = "invalid_body, or an RFC 8628 state: authorization_pending, slow_down, expired_token, access_denied, invalid_device_code"
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
_LIMIT = {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}}

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("/v1/audio/speech", "post"): Operation(
        "createSpeech",
        "Synthesize speech; the body streams raw audio (or SSE events when stream_format is sse).",
        "audio",
        body=schemas.SpeechRequest,
        errors=(400, 401, 402, 413, 500, 502, 503, 504),
    ),
    ("/v1/providers", "get"): Operation("listProviders", "Routable providers and their models.", ("array", schemas.ProviderOut)),
    ("/v1/voices", "get"): Operation(
        "listVoices",
        "The voice catalog merged across providers.",
        schemas.VoicesResponse,
        query=(
            {"name": "provider", "in": "query", "required": False, "schema": {"type": "string"}, "description": "Comma-separated provider ids."},
            {"name": "language", "in": "query", "required": False, "schema": {"type": "string"}, "description": "Case-insensitive language prefix."},
            {"name": "gender", "in": "query", "required": False, "schema": {"type": "string"}, "description": "Exact gender label, case-insensitive."},
        ),
    ),
    ("/v1/status", "get"): Operation("providerStatus", "Live health per provider.", ("array", schemas.StatusOut)),
    ("/v1/credits", "get"): Operation("getCredits", "Wallet snapshot in USD micro-dollars.", schemas.CreditsOut, security=_ANY),
    ("/v1/credits/activity", "get"): Operation(
        "listCreditActivity", "Ledger rows, newest first.", ("array", schemas.ActivityOut), query=(_LIMIT,), errors=(400, 401, 500),
        security=_ANY,
    ),
    ("/v1/usage", "get"): Operation(
        "getUsage",
        "Requests, cost and errors over the last `days`, with the `limit` most recent requests.",
        schemas.UsageOut,
        query=(
            {"name": "days", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 365, "default": 30}},
            {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20}},
        ),
        errors=(400, 401, 500),
        security=_ANY,
    ),
    ("/v1/auth/register", "post"): Operation(
        "register", "Create an organization and its first user; returns a session.", schemas.RegisterOut,
        body=schemas.RegisterRequest, errors=(400, 403, 409, 413, 429, 500), security=(), status=201,
    ),
    ("/v1/auth/login", "post"): Operation(
        "login", "Email and password to a session (throttled per client, and per client and email).", schemas.SessionOut,
        body=schemas.LoginRequest, errors=(400, 401, 413, 429, 500), security=(),
    ),
    ("/v1/auth/device-code", "post"): Operation(
        "createDeviceCode", "Start an RFC 8628 device login (400 when the Host is not trusted and auth.public_url is unset).",
        schemas.DeviceCodeOut, errors=(400, 500), security=()
    ),
    ("/v1/auth/poll", "post"): Operation(
        "pollDeviceCode", "Poll a device login; a session once the user approved.", schemas.SessionOut,
        body=schemas.PollRequest, errors=(400, 413, 500), security=(), notes=((400, _POLL_400),),
    ),
    ("/v1/auth/device/approve", "post"): Operation(
        "decideDeviceCode", "Approve (or deny) a pending device login as the signed-in user.", schemas.DeviceDecisionOut,
        body=schemas.DeviceDecision, errors=(400, 401, 404, 413, 500), security=_SESSION,
    ),
    ("/v1/auth/whoami", "get"): Operation("whoami", "Who the credentials belong to.", schemas.WhoAmIOut, security=_ANY),
    ("/v1/auth/logout", "post"): Operation(
        "logout", "Revoke the calling session (idempotent).", schemas.LogoutOut, security=_SESSION
    ),
    ("/v1/keys", "get"): Operation(
        "listKeys", "The organization's API keys (no secrets).", ("array", schemas.KeyOut), security=_SESSION
    ),
    ("/v1/keys", "post"): Operation(
        "createKey", "Mint an API key; the secret is shown only in this response.", schemas.CreatedKeyOut,
        body=schemas.CreateKeyRequest, errors=(400, 401, 409, 413, 500), security=_SESSION, status=201,
    ),
    ("/v1/keys/{key_id}", "delete"): Operation(
        "revokeKey", "Revoke a key; only its creator may.", schemas.RevokedKeyOut,
        errors=(401, 403, 404, 500), security=_SESSION, path_params=("key_id",),
    ),
    ("/v1/billing/methods", "get"): Operation(
        "listPaymentMethods", "The organization's saved cards (Stripe).", ("array", schemas.PaymentMethodOut),
        errors=(401, 500, 502, 503), security=_SESSION, notes=_BILLING_NOTES, retry_after=(),
    ),
    ("/v1/billing/topup", "post"): Operation(
        "topUp", "Charge a saved card off-session; the webhook credits the wallet once the payment succeeds.", schemas.TopupOut,
        body=schemas.TopupRequest, errors=(400, 401, 402, 404, 409, 413, 500, 502, 503), security=_SESSION,
        notes=(*_BILLING_NOTES, (402, "stripe_3ds_required (the card needs its holder: use checkout) or card_declined"),
               (404, "not_found: no such saved card in the organization"),
               (409, "conflict: the idempotencyKey was used before with another amount or card")),
        retry_after=(),
    ),
    ("/v1/billing/checkout", "post"): Operation(
        "createCheckout", "A Stripe Checkout page to buy credits in the browser, with the bonus of the amount's tier.",
        schemas.CheckoutOut, body=schemas.CheckoutRequest, errors=(400, 401, 413, 500, 502, 503), security=_SESSION,
        notes=_BILLING_NOTES, retry_after=(),
    ),
    ("/v1/billing/webhook", "post"): Operation(
        "stripeWebhook", "Stripe's events, authenticated by the Stripe-Signature header; credits and reversals apply once.",
        schemas.WebhookOut, errors=(400, 413, 500, 503), security=(), query=(_STRIPE_SIGNATURE,),
        notes=((400, "invalid_signature (missing, wrong or older than the tolerance; nothing is done) or invalid_body"),
               (503, "billing_not_configured: no STRIPE_WEBHOOK_SECRET")),
        retry_after=(),
    ),
}

_MODELS: list[type[BaseModel]] = [
    schemas.SpeechRequest,
    schemas.ErrorBody,
    schemas.VoicesResponse,
    schemas.ProviderOut,
    schemas.StatusOut,
    schemas.CreditsOut,
    schemas.ActivityOut,
    schemas.SpeechAudioDelta,
    schemas.SpeechAudioDone,
    schemas.UsageOut,
    schemas.RegisterRequest,
    schemas.RegisterOut,
    schemas.LoginRequest,
    schemas.SessionOut,
    schemas.DeviceCodeOut,
    schemas.PollRequest,
    schemas.DeviceDecision,
    schemas.DeviceDecisionOut,
    schemas.WhoAmIOut,
    schemas.LogoutOut,
    schemas.CreateKeyRequest,
    schemas.KeyOut,
    schemas.CreatedKeyOut,
    schemas.RevokedKeyOut,
    schemas.PaymentMethodOut,
    schemas.TopupRequest,
    schemas.TopupOut,
    schemas.CheckoutRequest,
    schemas.CheckoutOut,
    schemas.WebhookOut,
]
_REQUEST_MODELS = {
    schemas.SpeechRequest,
    schemas.RegisterRequest,
    schemas.LoginRequest,
    schemas.PollRequest,
    schemas.DeviceDecision,
    schemas.CreateKeyRequest,
    schemas.TopupRequest,
    schemas.CheckoutRequest,
}

_RATE_HEADERS = {
    "X-RateLimit-Limit": {"schema": {"type": "integer"}, "description": "The key's requests per minute."},
    "X-RateLimit-Remaining": {"schema": {"type": "integer"}, "description": "Requests left in the current minute."},
    "X-RateLimit-Reset": {"schema": {"type": "integer"}, "description": "Unix seconds when the allowance is full again."},
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}}

_AUDIO_TYPES = ["audio/mpeg", "audio/ogg", "audio/aac", "audio/flac", "audio/wav", "audio/l16"]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _response_schema(response: Any) -> dict[str, Any]:
    if isinstance(response, tuple):
        return {"type": "array", "items": _ref(response[1])}
    return _ref(response)


def _operation(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "security": [{name: []} for name in op.security]}
    parameters = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in op.path_params]
    if parameters or op.query:
        out["parameters"] = parameters + list(op.query)
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(op.body)}}}
    if op.response == "audio":
        content: dict[str, Any] = {t: {"schema": {"type": "string", "format": "binary"}} for t in _AUDIO_TYPES}
        content["text/event-stream"] = {"schema": {"type": "string"}}
        ok = {
            "description": "Chunked audio as the upstream produces it.",
            "headers": {
                "X-VoxRouter-Provider": {"schema": {"type": "string"}, "description": "The provider that served."},
                "X-VoxRouter-Model": {"schema": {"type": "string"}, "description": "The provider/model that served."},
                "X-Request-Id": {"schema": {"type": "string"}},
            },
            "content": content,
        }
    else:
        ok = {"description": "OK", "content": {"application/json": {"schema": _response_schema(op.response)}}}
    # An API key's requests count against its limits: 429 possible, X-RateLimit-* on every answer.
    counted = "apiKey" in op.security
    errors = sorted({*op.errors, 429}) if counted else op.errors
    rate_headers = _RATE_HEADERS if counted else {}
    ok["headers"] = {**ok.get("headers", {}), **rate_headers}
    if not ok["headers"]:
        del ok["headers"]
    responses: dict[Any, Any] = {str(op.status): ok}
    for status in errors:
        error: dict[str, Any] = {"description": dict(op.notes).get(status, _ERRORS[status])}
        headers = {**rate_headers, **(_RETRY_AFTER if status in op.retry_after else {})}
        if headers and status != 401:
            error["headers"] = headers
        error["content"] = {"application/json": {"schema": _ref(schemas.ErrorBody)}}
        responses[str(status)] = error
    out["responses"] = responses
    return out


def build_spec() -> dict[str, Any]:
    routed = {
        (route.path, method.lower())
        for route in ROUTES
        if route.include_in_schema  # the HTML pages are not API operations
        for method in (route.methods or ())
        if method != "HEAD"
    }
    if routed != set(OPERATIONS):
        raise RuntimeError(f"routes and OpenAPI operations differ: {sorted(routed ^ set(OPERATIONS))}")
    _, definitions = models_json_schema(
        [(model, "validation" if model in _REQUEST_MODELS else "serialization") for model in _MODELS],
        ref_template="#/components/schemas/{model}"
    )
    paths: dict[str, dict[str, Any]] = {}
    for (path, method), op in OPERATIONS.items():
        paths.setdefault(path, {})[method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "VoxRouter",
            "version": "0.1.0",
            "description": "One OpenAI-compatible API across every TTS provider. Money is USD micro-dollars.",
        },
        "servers": [{"url": "http://127.0.0.1:8080"}],
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "pk_... API key"},
                "session": {"type": "http", "scheme": "bearer", "description": "vr_session_... from the device login"},
            },
        },
    }


def render() -> str:
    return yaml.safe_dump(build_spec(), sort_keys=False, allow_unicode=True, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())
