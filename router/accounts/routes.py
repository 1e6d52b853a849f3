"""Accounts: register, log in (password or RFC 8628 device flow), sessions, API keys.

The device flow: the CLI asks for a code pair (`device-code`), shows the user code and
the verification URL, and polls; a signed-in user approves the code on the web page
(router/web.py) or with `POST /v1/auth/device/approve`; the next poll returns a session.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from voxrouter.router import schemas
from voxrouter.router.accounts.auth import SESSION_PREFIX, Principal, bearer_token, hash_secret, new_api_key, new_secret
from voxrouter.router.gateway import Gateway
from voxrouter.router.http.body import read_body
from voxrouter.router.http.errors import ApiError
from voxrouter.router.http.operation import API_KEY_OR_SESSION, SESSION, ApiRoute, Operation
from voxrouter.router.http.public_url import public_base
from voxrouter.router.limits.policy import organization_limit
from voxrouter.router.schemas import (
    CreatedKeyOut,
    CreateKeyRequest,
    DeviceCodeOut,
    DeviceDecision,
    DeviceDecisionOut,
    KeyOut,
    LoginRequest,
    LogoutOut,
    PollRequest,
    RegisterOut,
    RegisterRequest,
    RevokedKeyOut,
    SessionOut,
    WhoAmIOut,
)
from voxrouter.router.store.base import (
    ApiKeyRecord,
    Conflict,
    NewApiKeyRecord,
    SessionRecord,
    TooManyKeys,
    UserRecord,
    iso,
    utcnow,
)

# RFC 8628 6.1: consonants only (no vowels: no words), no look-alikes (no 0/O, 1/I).
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
_SMALL_BODY = 16_384
_POLL_ERRORS = {
    "authorization_pending": "the user has not approved this code yet; poll again after `interval` seconds",
    "slow_down": "polling too fast; wait {interval} seconds between polls",
    "expired_token": "the device code expired; start again with POST /v1/auth/device-code",
    "access_denied": "the user denied this login",
    "invalid_device_code": "unknown or already used device code",
}


def _json(body: object, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def normalize_email(email: str) -> str:
    return email.strip().lower()


def normalize_user_code(raw: str) -> str:
    """Accept what a person types: any case, with or without the dash or spaces."""
    letters = re.sub(r"[\s-]", "", raw).upper()
    if len(letters) == 8 and all(c in USER_CODE_ALPHABET for c in letters):
        return f"{letters[:4]}-{letters[4:]}"
    return letters  # matches no code: a typo is not silently repaired into another code


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def start_session(gateway: Gateway, user_id: str, kind: str = "cli") -> tuple[str, SessionRecord]:
    if kind == "web":
        lifetime = dt.timedelta(hours=gateway.config.auth.web_session_hours)
    else:
        lifetime = dt.timedelta(days=gateway.config.auth.session_days)
    token = new_secret(SESSION_PREFIX)
    record = await gateway.store.create_session(user_id, token.hash, kind, iso(utcnow() + lifetime))
    return token.secret, record


async def check_password(gateway: Gateway, request: Request, email: str, password: str) -> UserRecord:
    """The user, if the password is right; 401 if not; 429 once this client has failed too
    often, overall or for this email, and a short backoff once the email has failed too
    often from anywhere, for clients that failed for it themselves (router/throttle.py:
    others' failures never refuse a client that has not failed). The KDF's cost is spent
    for unknown emails too, so timing tells nothing."""
    email = normalize_email(email)
    attempt = gateway.login.attempt(client_address(request), email)
    if isinstance(attempt, int):
        raise ApiError(
            429, "rate_limited", f"too many failed logins; retry in {attempt} seconds", headers={"Retry-After": str(attempt)}
        )
    user = await gateway.store.find_user(email)
    if not await gateway.passwords.verify(password, user.password_hash if user else None) or user is None:
        raise ApiError(401, "unauthorized", "wrong email or password")  # the attempt stays counted
    attempt.succeeded()
    return user


async def register(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    if not gateway.config.auth.allow_registration:
        raise ApiError(403, "registration_closed", "this gateway does not accept sign-ups; ask its operator for an account")
    body = await read_body(request, RegisterRequest, _SMALL_BODY)
    email = normalize_email(body.email)
    # Every sign-up that costs a password hash counts, taken (or refused) before any await.
    wait = gateway.registrations.take(client_address(request))
    if wait:
        raise ApiError(
            429, "rate_limited", f"too many sign-ups from this address; retry in {wait} seconds", headers={"Retry-After": str(wait)}
        )
    password_hash = await gateway.passwords.hash(body.password)
    try:
        user = await gateway.store.create_account(body.organization or email, email, password_hash)
    except Conflict:
        raise ApiError(409, "conflict", "that email or organization name is taken; log in instead") from None
    token, session = await start_session(gateway, user.id)
    out = RegisterOut(session_token=token, expires_at=session.expires_at, user_id=user.id, org_id=user.org_id)
    return _json(out.model_dump(), 201)


async def login(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    body = await read_body(request, LoginRequest, _SMALL_BODY)
    user = await check_password(gateway, request, body.email, body.password)
    token, session = await start_session(gateway, user.id)
    return _json(SessionOut(session_token=token, expires_at=session.expires_at, user_id=user.id).model_dump())


async def device_code(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    settings = gateway.config.auth
    base = public_base(request, settings)
    device = new_secret("vr_device_")
    for _ in range(5):
        code = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(8))
        user_code = f"{code[:4]}-{code[4:]}"
        expires_at_ms = int(time.time() * 1000) + settings.device_code_ttl_s * 1000
        try:
            await gateway.store.create_device_code(device.hash, user_code, expires_at_ms, settings.device_poll_interval_s)
            break
        except Conflict:
            continue  # 20^8 codes: a clash is rare, and a retry ends it
    else:
        raise ApiError(503, "provider_unavailable", "could not allocate a device code; retry")
    out = DeviceCodeOut(
        device_code=device.secret,
        user_code=user_code,
        verification_uri=f"{base}/device",
        verification_uri_complete=f"{base}/device?user_code={user_code}",
        expires_in=settings.device_code_ttl_s,
        interval=settings.device_poll_interval_s,
    )
    return _json(out.model_dump())


async def poll(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    body = await read_body(request, PollRequest, _SMALL_BODY)
    token = new_secret(SESSION_PREFIX)
    expires_at = iso(utcnow() + dt.timedelta(days=gateway.config.auth.session_days))
    result = await gateway.store.poll_device_code(hash_secret(body.device_code), int(time.time() * 1000), token.hash, expires_at)
    if result.outcome == "approved":
        assert result.user_id is not None
        return _json(SessionOut(session_token=token.secret, expires_at=expires_at, user_id=result.user_id).model_dump())
    details = _POLL_ERRORS[result.outcome].format(interval=result.interval_s)
    return _json({"error": result.outcome, "details": details}, 400)


async def decide_device(gateway: Gateway, user_id: str, raw_user_code: str, approve: bool) -> str:
    """Approve or deny a pending code for `user_id`; the user code, normalised."""
    user_code = normalize_user_code(raw_user_code)
    if not await gateway.store.decide_device_code(user_code, user_id, approve, int(time.time() * 1000)):
        raise ApiError(404, "not_found", "no pending login with that code (it may have expired or been used)")
    return user_code


async def approve_device(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    principal = await gateway.auth.session(request, fresh=True)
    body = await read_body(request, DeviceDecision, _SMALL_BODY)
    assert principal.user_id is not None
    user_code = await decide_device(gateway, principal.user_id, body.user_code, body.approve)
    return _json(DeviceDecisionOut(user_code=user_code, state="approved" if body.approve else "denied").model_dump())


async def whoami(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    principal = await gateway.auth.any(request)
    user = await gateway.store.get_user(principal.user_id) if principal.user_id else None
    out = WhoAmIOut(
        user_id=principal.user_id,
        auth=principal.auth,
        expires_at=principal.expires_at,
        org_id=principal.org_id,
        email=user.email if user else None,
    )
    return _json(out.model_dump(exclude={"expires_at"} if principal.auth == "api_key" else None))


async def logout(request: Request) -> Response:
    """Revoke the calling session. Idempotent: an already revoked, expired or unknown
    session answers `revoked: false` rather than 401."""
    gateway: Gateway = request.app.state.gateway
    token = bearer_token(request)
    if token is None or not token.startswith(SESSION_PREFIX):
        raise ApiError(401, "unauthorized", "send the session to end: Authorization: Bearer vr_session_...")
    digest = hash_secret(token)
    revoked = await gateway.store.revoke_session(digest)
    await gateway.auth.revoke(digest)
    return _json(LogoutOut(revoked=revoked).model_dump())


def key_out(record: ApiKeyRecord, pending_last_used: str | None = None) -> KeyOut:
    last_used = max(filter(None, (record.last_used_at, pending_last_used)), default=None)
    return KeyOut(
        id=record.id,
        name=record.name,
        key_suffix=record.key_suffix,
        max_concurrency=record.max_concurrency,
        created_at=record.created_at,
        last_used_at=last_used,
        daily_limit_micros=record.daily_limit_micros,
        monthly_limit_micros=record.monthly_limit_micros,
        created_by=record.created_by,
        requests_per_minute=record.requests_per_minute,
        characters_per_minute=record.characters_per_minute,
    )


async def list_keys(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    principal = await gateway.auth.session(request)
    records = await gateway.store.list_api_keys(principal.org_id)
    keys = [key_out(r, gateway.auth.pending_last_used(r.id)).model_dump(by_alias=True) for r in records]
    return _json(keys)


_CAPPED_LIMITS = (
    ("requests_per_minute", "requestsPerMinute"),
    ("characters_per_minute", "charactersPerMinute"),
    ("max_concurrency", "maxConcurrency"),
)


def check_key_limits(gateway: Gateway, org_id: str, body: CreateKeyRequest) -> None:
    """A tenant may only give a key limits at or below its organization's ceiling in the
    config (`limits.organizations[org]`, else `limits.defaults`; None there: no ceiling).
    Operators set anything with `voxrouter admin create-key`."""
    for field, wire in _CAPPED_LIMITS:
        wanted = getattr(body, field)
        ceiling = organization_limit(gateway.config.limits, org_id, field)
        if wanted is not None and ceiling is not None and wanted > ceiling:
            raise ApiError(
                400,
                "invalid_body",
                f"{wire} {wanted} is above this organization's ceiling of {ceiling}; "
                f"give {ceiling} or less, or leave it out to get the organization's limit",
            )


async def create_key(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    principal = await gateway.auth.session(request, fresh=True)  # a logged-out session mints nothing
    body = await read_body(request, CreateKeyRequest, _SMALL_BODY)
    check_key_limits(gateway, principal.org_id, body)
    secret = new_api_key()
    cap = gateway.config.auth.max_keys_per_org
    try:
        record = await gateway.store.create_api_key(
            NewApiKeyRecord(
                org_id=principal.org_id,
                name=body.name,
                key_hash=secret.hash,
                key_suffix=secret.suffix,
                created_by=principal.user_id,
                max_concurrency=body.max_concurrency,
                daily_limit_micros=body.daily_limit_micros,
                monthly_limit_micros=body.monthly_limit_micros,
                requests_per_minute=body.requests_per_minute,
                characters_per_minute=body.characters_per_minute,
            ),
            max_live=cap,
        )
    except TooManyKeys:
        raise ApiError(
            409, "conflict", f"this organization already has {cap} API keys, the most it may have; revoke one first"
        ) from None
    return _json(CreatedKeyOut(key=key_out(record), secret=secret.secret).model_dump(by_alias=True), 201)


async def delete_key(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    principal = await gateway.auth.session(request, fresh=True)
    key_id = request.path_params["key_id"]
    record = await _own_org_key(gateway, principal, key_id)
    if record.created_by != principal.user_id:
        raise ApiError(403, "forbidden", "only the user who created a key may revoke it")
    revoked = await gateway.store.revoke_api_key(record.id)
    await gateway.auth.revoke(record.key_hash)
    return _json(RevokedKeyOut(id=record.id, revoked=revoked).model_dump())


async def _own_org_key(gateway: Gateway, principal: Principal, key_id: str) -> ApiKeyRecord:
    record = await gateway.store.get_api_key(principal.org_id, key_id) if "\x00" not in key_id else None
    if record is None or record.revoked_at is not None:
        # Another organization's key is as absent as a key that never existed.
        raise ApiError(404, "not_found", f"no key {key_id!r} in your organization")
    return record


_POLL_400 = "invalid_body, or an RFC 8628 state: authorization_pending, slow_down, expired_token, access_denied, invalid_device_code"

ROUTES = [
    ApiRoute("/v1/auth/register", register, method="POST", operation=Operation(
        "register", "Create an organization and its first user; returns a session.", schemas.RegisterOut,
        body=schemas.RegisterRequest, errors=(400, 403, 409, 413, 429, 500), security=(), status=201,
    )),
    ApiRoute("/v1/auth/login", login, method="POST", operation=Operation(
        "login", "Email and password to a session (throttled per client, and per client and email).", schemas.SessionOut,
        body=schemas.LoginRequest, errors=(400, 401, 413, 429, 500), security=(),
    )),
    ApiRoute("/v1/auth/device-code", device_code, method="POST", operation=Operation(
        "createDeviceCode", "Start an RFC 8628 device login (400 when the Host is not trusted and auth.public_url is unset).",
        schemas.DeviceCodeOut, errors=(400, 500), security=(),
    )),
    ApiRoute("/v1/auth/poll", poll, method="POST", operation=Operation(
        "pollDeviceCode", "Poll a device login; a session once the user approved.", schemas.SessionOut,
        body=schemas.PollRequest, errors=(400, 413, 500), security=(), notes=((400, _POLL_400),),
    )),
    ApiRoute("/v1/auth/device/approve", approve_device, method="POST", operation=Operation(
        "decideDeviceCode", "Approve (or deny) a pending device login as the signed-in user.", schemas.DeviceDecisionOut,
        body=schemas.DeviceDecision, errors=(400, 401, 404, 413, 500), security=SESSION,
    )),
    ApiRoute("/v1/auth/whoami", whoami, method="GET", operation=Operation(
        "whoami", "Who the credentials belong to.", schemas.WhoAmIOut, security=API_KEY_OR_SESSION
    )),
    ApiRoute("/v1/auth/logout", logout, method="POST", operation=Operation(
        "logout", "Revoke the calling session (idempotent).", schemas.LogoutOut, security=SESSION
    )),
    ApiRoute("/v1/keys", list_keys, method="GET", operation=Operation(
        "listKeys", "The organization's API keys (no secrets).", ("array", schemas.KeyOut), security=SESSION
    )),
    ApiRoute("/v1/keys", create_key, method="POST", operation=Operation(
        "createKey", "Mint an API key; the secret is shown only in this response.", schemas.CreatedKeyOut,
        body=schemas.CreateKeyRequest, errors=(400, 401, 409, 413, 500), security=SESSION, status=201,
    )),
    ApiRoute("/v1/keys/{key_id}", delete_key, method="DELETE", operation=Operation(
        "revokeKey", "Revoke a key; only its creator may.", schemas.RevokedKeyOut, errors=(401, 403, 404, 500), security=SESSION,
    )),
]
