"""The ASGI application: an explicit routing table, request ids, errors in the wire shape."""

from __future__ import annotations

import contextlib
import re
import uuid
from typing import AsyncIterator, Mapping

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxrouter.router.accounts import pages as web
from voxrouter.router.accounts import routes as accounts
from voxrouter.router.billing import routes as billing
from voxrouter.router.billing import usage
from voxrouter.router.catalog import routes as catalog
from voxrouter.router.gateway import running_gateway
from voxrouter.router.http.errors import EXCEPTION_HANDLERS
from voxrouter.router.limits.policy import RESPONSE_HEADERS
from voxrouter.router.ops import liveness, metrics
from voxrouter.router.settings import Settings
from voxrouter.router.speech import route as speech

ROUTES = [
    Route("/v1/audio/speech", speech.create_speech, methods=["POST"]),
    Route("/v1/providers", catalog.list_providers, methods=["GET"]),
    Route("/v1/voices", catalog.list_voices, methods=["GET"]),
    Route("/v1/status", catalog.provider_status, methods=["GET"]),
    Route("/v1/credits", usage.credits, methods=["GET"]),
    Route("/v1/credits/activity", usage.credit_activity, methods=["GET"]),
    Route("/v1/usage", usage.usage_report, methods=["GET"]),
    Route("/v1/auth/register", accounts.register, methods=["POST"]),
    Route("/v1/auth/login", accounts.login, methods=["POST"]),
    Route("/v1/auth/device-code", accounts.device_code, methods=["POST"]),
    Route("/v1/auth/poll", accounts.poll, methods=["POST"]),
    Route("/v1/auth/device/approve", accounts.approve_device, methods=["POST"]),
    Route("/v1/auth/whoami", accounts.whoami, methods=["GET"]),
    Route("/v1/auth/logout", accounts.logout, methods=["POST"]),
    Route("/v1/keys", accounts.list_keys, methods=["GET"]),
    Route("/v1/keys", accounts.create_key, methods=["POST"]),
    Route("/v1/keys/{key_id}", accounts.delete_key, methods=["DELETE"]),
    Route("/v1/billing/methods", billing.list_methods, methods=["GET"]),
    Route("/v1/billing/topup", billing.topup, methods=["POST"]),
    Route("/v1/billing/checkout", billing.checkout, methods=["POST"]),
    Route("/v1/billing/webhook", billing.webhook, methods=["POST"]),
    # The device-login page for people (HTML, not part of the API).
    Route("/device", web.device_page, methods=["GET"], include_in_schema=False),
    Route("/device/login", web.device_login, methods=["POST"], include_in_schema=False),
    Route("/device/decide", web.device_decide, methods=["POST"], include_in_schema=False),
    Route("/device/logout", web.device_logout, methods=["POST"], include_in_schema=False),
    # For operators: the Prometheus scrape and the Kubernetes probes (not part of the API).
    Route("/metrics", metrics.metrics_endpoint, methods=["GET"], include_in_schema=False),
    Route("/healthz", liveness.healthz, methods=["GET"], include_in_schema=False),
    Route("/readyz", liveness.readyz, methods=["GET"], include_in_schema=False),
    # Where Stripe Checkout sends the browser back (config billing.success_url / cancel_url).
    Route("/billing/success", billing.checkout_success, methods=["GET"], include_in_schema=False),
    Route("/billing/cancel", billing.checkout_cancel, methods=["GET"], include_in_schema=False),
]

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Echo a sane `X-Request-Id` from the client or mint one; expose it to handlers.

    Also adds the headers a handler left in `request.state.response_headers` (the
    `X-RateLimit-*` set) to whatever response goes out, error responses included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _CLIENT_REQUEST_ID.match(incoming) else f"req_{uuid.uuid4().hex}"
        state = scope.setdefault("state", {})
        state["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in state.get(RESPONSE_HEADERS, {}).items()]
                message["headers"] = [*message.get("headers", []), *extra, (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(
    settings: Settings | None = None, *, transports: Mapping[str, httpx.AsyncBaseTransport] | None = None
) -> Starlette:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with running_gateway(settings, transports=transports) as gateway:
            app.state.gateway = gateway
            yield

    return Starlette(
        routes=ROUTES,
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
