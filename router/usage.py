"""`GET /v1/credits` and `GET /v1/credits/activity`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from router.errors import ApiError
from router.schemas import ActivityOut, CreditsOut


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
    principal = await gateway.auth.api_key(request)
    snap = await gateway.wallet.snapshot(principal.org_id)
    body = CreditsOut(balance_micros=snap.balance_micros, reserved_micros=snap.reserved_micros)
    return JSONResponse(body.model_dump(by_alias=True))


async def credit_activity(request: Request) -> Response:
    gateway = request.app.state.gateway
    principal = await gateway.auth.api_key(request)
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
