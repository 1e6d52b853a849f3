"""`GET /v1/credits`, `GET /v1/credits/activity` and `GET /v1/usage`, with an API key or a session."""

from __future__ import annotations

import datetime as dt

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from voxrouter.router import schemas
from voxrouter.router.http.errors import ApiError
from voxrouter.router.http.operation import API_KEY_OR_SESSION, ApiRoute, Operation, query_int
from voxrouter.router.limits import policy as limits
from voxrouter.router.schemas import ActivityOut, CreditsOut, ErrorCodeCount, ProviderUsage, RecentUsage, UsageOut, UsageTotals
from voxrouter.router.store.base import iso, utcnow


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(400, "invalid_body", f"{name} must be an integer from {low} to {high}, got {raw!r}")
    return value


async def credits(request: Request) -> Response:
    gateway = request.app.state.gateway
    principal = await limits.counted(request, await gateway.auth.any(request))
    snap = await gateway.wallet.snapshot(principal.org_id)
    body = CreditsOut(balance_micros=snap.balance_micros, reserved_micros=snap.reserved_micros)
    return JSONResponse(body.model_dump(by_alias=True))


async def credit_activity(request: Request) -> Response:
    gateway = request.app.state.gateway
    principal = await limits.counted(request, await gateway.auth.any(request))
    limit = int_param(request, "limit", 20, 1, 100)
    rows = await gateway.store.activity(principal.org_id, limit)
    body = [
        ActivityOut(
            created_at=r.created_at,
            kind=r.kind,  # type: ignore[arg-type]
            micros_delta=r.micros_delta,
            micros_balance_after=r.micros_balance_after,
            source=r.source,
        ).model_dump(by_alias=True)
        for r in rows
    ]
    return JSONResponse(body)


async def usage_report(request: Request) -> Response:
    gateway = request.app.state.gateway
    principal = await limits.counted(request, await gateway.auth.any(request))
    days = int_param(request, "days", 30, 1, 365)
    limit = int_param(request, "limit", 20, 1, 1000)
    summary = await gateway.store.usage_summary(principal.org_id, iso(utcnow() - dt.timedelta(days=days)), limit)
    body = UsageOut(
        totals=UsageTotals(requests=summary.requests, cost_micros=summary.cost_micros, error_count=summary.error_count),
        by_provider=[ProviderUsage(provider=p, requests=n, cost_micros=c) for p, n, c in summary.by_provider],
        by_error_code=[ErrorCodeCount(code=code, count=n) for code, n in summary.by_error_code],
        recent=[
            RecentUsage(
                created_at=r.created_at,
                status=r.status,
                provider=r.provider,
                model=r.model,
                cost_micros=r.cost_micros,
                code=r.error_code,
                request_id=r.request_id,
                kind=r.kind,
            )
            for r in summary.recent
        ],
    )
    return JSONResponse(body.model_dump(by_alias=True))


ROUTES = [
    ApiRoute("/v1/credits", credits, method="GET", operation=Operation(
        "getCredits", "Wallet snapshot in USD micro-dollars.", schemas.CreditsOut, security=API_KEY_OR_SESSION
    )),
    ApiRoute("/v1/credits/activity", credit_activity, method="GET", operation=Operation(
        "listCreditActivity", "Ledger rows, newest first.", ("array", schemas.ActivityOut),
        query=(query_int("limit", 1, 100, 20),), errors=(400, 401, 500), security=API_KEY_OR_SESSION,
    )),
    ApiRoute("/v1/usage", usage_report, method="GET", operation=Operation(
        "getUsage",
        "Requests, cost and errors over the last `days`, with the `limit` most recent requests.",
        schemas.UsageOut,
        query=(query_int("days", 1, 365, 30), query_int("limit", 1, 1000, 20)),
        errors=(400, 401, 500),
        security=API_KEY_OR_SESSION,
    )),
]
