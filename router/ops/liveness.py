"""`GET /healthz` (the process answers) and `GET /readyz` (it can serve): for probes every few seconds.

Readiness checks what a request needs and nothing slow: the database answers and has every
migration, Redis answers when limits live there, and the engines set to preload are loaded.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CHECK_TIMEOUT_S = 2.0


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    gateway = request.app.state.gateway
    checks: dict[str, str] = {}
    checks["database"], checks["migrations"] = await _database(gateway.store)
    if gateway.limits.service is not None:  # limits shared through Redis
        checks[gateway.limits.service] = await _check(gateway.limits.ping())
    for provider in gateway.providers.values():
        # Engines the config preloads must be loaded (or known to be missing) before traffic.
        for engine_id, reason in provider.preload_states():
            checks[f"engine:{engine_id}"] = reason or "ok"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse({"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503)


async def _database(store: Any) -> tuple[str, str]:
    try:
        missing = await asyncio.wait_for(store.missing_migrations(), CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure is the answer: not ready
        return f"unreachable: {type(exc).__name__}", "unknown"
    return "ok", "ok" if not missing else f"missing {', '.join(map(str, missing))}"


async def _check(ping: Any) -> str:
    try:
        await asyncio.wait_for(ping, CHECK_TIMEOUT_S)
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}"
    return "ok"


# The Kubernetes probes, for operators (not part of the API).
ROUTES = [
    Route("/healthz", healthz, methods=["GET"], include_in_schema=False),
    Route("/readyz", readyz, methods=["GET"], include_in_schema=False),
]
