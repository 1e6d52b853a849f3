"""Per-key limits on the request path: which limits apply, and the 429s and headers they give.

The counting itself lives in `voxrouter.router.limits.state` (this process's memory, or Redis shared by
every replica). A key's own values win, then its organization's defaults in the config,
then the config's defaults. Every API-key response carries the `X-RateLimit-*` headers.
"""

from __future__ import annotations

from starlette.requests import Request

from voxrouter.router.accounts.auth import Principal
from voxrouter.router.config import LimitsSpec
from voxrouter.router.http.errors import ApiError
from voxrouter.router.limits.state import Admission, KeyLimits, LimitState
from voxrouter.router.ops import metrics

RESPONSE_HEADERS = "response_headers"  # request.state attribute the app's middleware adds to the response


def key_limits(spec: LimitsSpec, principal: Principal) -> KeyLimits:
    """The limits a key runs under: its own values, else its organization's. A tenant's
    `POST /v1/keys` may only set values at or under `organization_limit` (router/accounts.py);
    an operator's `voxrouter admin create-key` may set any."""

    def pick(own: int | None, field: str) -> int | None:
        return own if own is not None else organization_limit(spec, principal.org_id, field)

    return KeyLimits(
        requests_per_minute=pick(principal.requests_per_minute, "requests_per_minute"),
        characters_per_minute=pick(principal.characters_per_minute, "characters_per_minute"),
        max_concurrency=pick(principal.max_concurrency, "max_concurrency"),
    )


def organization_limit(spec: LimitsSpec, org_id: str, field: str) -> int | None:
    """The operator's ceiling on `field` for an organization's keys (None: unlimited)."""
    org = spec.organizations.get(org_id)
    if org is not None and getattr(org, field) is not None:
        return getattr(org, field)
    return getattr(spec.defaults, field)


async def admit(
    request: Request, state: LimitState, spec: LimitsSpec, principal: Principal, characters: int = 0, *, take_slot: bool = False
) -> Admission | None:
    """Count this request against its key, or raise 429. None for sessions (no key) or with limits off."""
    if principal.key_id is None or not spec.enabled:
        return None
    admission = await state.admit(principal.key_id, key_limits(spec, principal), characters, take_slot=take_slot)
    headers = admission.headers()
    setattr(request.state, RESPONSE_HEADERS, {k: v for k, v in headers.items() if k != "Retry-After"})
    if admission.allowed:
        return admission
    metrics.LIMIT_REJECTIONS.labels(admission.reason or "rate_limited").inc()
    if admission.reason == "concurrency_limited":
        raise ApiError(
            429,
            "concurrency_limited",
            "this key has as many requests in flight as it may; wait for one to finish",
            headers={"Retry-After": headers["Retry-After"]},
        )
    raise ApiError(
        429,
        "rate_limited",
        f"this key's per-minute limit is used up; retry in {headers['Retry-After']}s",
        headers={"Retry-After": headers["Retry-After"]},
    )


async def counted(request: Request, principal: Principal) -> Principal:
    """For the routes with no body to price: count the request against its key (or raise 429)."""
    gateway = request.app.state.gateway
    await admit(request, gateway.limits, gateway.config.limits, principal)
    return principal
