"""The ASGI application: an explicit routing table, request ids, errors in the wire shape."""

from __future__ import annotations

import contextlib
import re
import uuid
from typing import AsyncIterator, Mapping

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxrouter.router.accounts import pages
from voxrouter.router.accounts import routes as accounts
from voxrouter.router.billing import routes as billing
from voxrouter.router.billing import usage
from voxrouter.router.catalog import routes as catalog
from voxrouter.router.gateway import running_gateway
from voxrouter.router.http.errors import EXCEPTION_HANDLERS
from voxrouter.router.limits.policy import RESPONSE_HEADERS
from voxrouter.router.ops import liveness, metrics
from voxrouter.router.ops.logging import bind_request_id, unbind_request_id
from voxrouter.router.settings import Settings
from voxrouter.router.speech import route as speech
from voxrouter.router.transcription import route as transcription

# The routing table: each area lists its own routes (and documents its API operations beside them).
ROUTES = [
    *speech.ROUTES,
    *transcription.ROUTES,
    *catalog.ROUTES,
    *usage.ROUTES,
    *accounts.ROUTES,
    *billing.ROUTES,
    *pages.ROUTES,
    *metrics.ROUTES,
    *liveness.ROUTES,
]

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Echo a sane `X-Request-Id` from the client or mint one; expose it to handlers
    (`request.state.request_id`) and bind it for the request's log lines (router/ops/logging.py).
    The speech route records it on the usage row and passes it to upstreams that take one.

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

        token = bind_request_id(request_id)
        await self.app(scope, receive, send_with_id)
        # Unbound only on a normal return: when the app raises, the server error handler and
        # uvicorn log the failure after this frame, still in this request's own task (uvicorn
        # runs each request in a task of its own, so the id leaks to no other request).
        unbind_request_id(token)


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
