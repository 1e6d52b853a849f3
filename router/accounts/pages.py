"""The device-login page (RFC 8628 `verification_uri`): sign in, enter the code, approve or deny.

A web session (`kind="web"`) lives in the HttpOnly `vr_web` cookie. Forms are protected
against cross-site posts: the sign-in form by a double-submit cookie (`vr_csrf`), the
signed-in forms by an HMAC keyed with the session secret, so a page on another origin can
neither read nor compute it. Every answer is HTML with a strict CSP and `no-store`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from voxrouter.router.accounts.auth import Principal, hash_secret
from voxrouter.router.accounts.routes import check_password, decide_device, normalize_user_code, start_session
from voxrouter.router.gateway import Gateway
from voxrouter.router.http.errors import ApiError

SESSION_COOKIE = "vr_web"
CSRF_COOKIE = "vr_csrf"
_MAX_FORM_BYTES = 4096
_CSRF_LABEL = b"voxrouter device page csrf v1"
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("voxrouter.router.accounts", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


async def device_page(request: Request) -> Response:
    """GET /device: the sign-in form, or (signed in) the code form prefilled from `?user_code=`."""
    gateway: Gateway = request.app.state.gateway
    user_code = _clean_code(request.query_params.get("user_code", ""))
    signed_in = await _web_session(gateway, request)
    if signed_in is None:
        return _signin(request, user_code)
    return await _code_form(gateway, *signed_in, user_code)


async def device_login(request: Request) -> Response:
    """POST /device/login: check the password, start a web session, back to the code form."""
    gateway: Gateway = request.app.state.gateway
    form = await _form(request)
    if form is None:
        return _message("Request too large", "That form was larger than expected.", 413)
    user_code = _clean_code(form.get("user_code", ""))
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), form.get("csrf", "").encode()):
        return _forbidden()
    try:
        user = await check_password(gateway, request, form.get("email", ""), form.get("password", ""))
    except ApiError as exc:
        if exc.status == 429:
            error = f"Too many failed sign-ins. Try again in {exc.headers.get('Retry-After', 'a few')} seconds."
        else:
            error = "Wrong email or password."
        return _signin(request, user_code, email=form.get("email", ""), error=error, status=exc.status, headers=exc.headers)
    old = request.cookies.get(SESSION_COOKIE)
    if old:
        await _revoke(gateway, old)
    token, _ = await start_session(gateway, user.id, kind="web")
    response = _redirect(user_code)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=gateway.config.auth.web_session_hours * 3600,
        path="/",
        secure=_https(request),
        httponly=True,
        samesite="lax",
    )
    response.delete_cookie(CSRF_COOKIE, path="/device", secure=_https(request), httponly=True, samesite="lax")
    return response


async def device_decide(request: Request) -> Response:
    """POST /device/decide: approve or deny the code as the signed-in user."""
    gateway: Gateway = request.app.state.gateway
    form = await _form(request)
    if form is None:
        return _message("Request too large", "That form was larger than expected.", 413)
    user_code = _clean_code(form.get("user_code", ""))
    signed_in = await _web_session(gateway, request)
    if signed_in is None:
        return _signin(request, user_code, error="Your sign-in has expired. Sign in again.", status=401)
    token, principal = signed_in
    if not _csrf_ok(token, form.get("csrf", "")):
        return _forbidden()
    action = form.get("action")
    if action not in ("approve", "deny"):
        return await _code_form(gateway, token, principal, user_code, error="Choose Approve or Deny.", status=400)
    if len(user_code) != 9:
        return await _code_form(
            gateway, token, principal, user_code, error="Enter the 8-letter code shown in your terminal.", status=400
        )
    approve = action == "approve"
    assert principal.user_id is not None
    try:
        await decide_device(gateway, principal.user_id, user_code, approve)
    except ApiError as exc:
        if exc.status != 404:
            raise
        error = f"No pending login with code {user_code}: it may have expired or already been used."
        return await _code_form(gateway, token, principal, user_code, error=error, status=404)
    if approve:
        return _message("Device approved", "Device approved. You can return to your terminal.", 200, token=token)
    return _message("Login denied", "Login denied. The device was not signed in.", 200, token=token)


async def device_logout(request: Request) -> Response:
    """POST /device/logout: revoke the web session and clear its cookie."""
    gateway: Gateway = request.app.state.gateway
    form = await _form(request)
    if form is None:
        return _message("Request too large", "That form was larger than expected.", 413)
    signed_in = await _web_session(gateway, request)
    if signed_in is not None:
        token, _ = signed_in
        if not _csrf_ok(token, form.get("csrf", "")):
            return _forbidden()
        await _revoke(gateway, token)
    response = _redirect("")
    response.delete_cookie(SESSION_COOKIE, path="/", secure=_https(request), httponly=True, samesite="lax")
    return response


async def _web_session(gateway: Gateway, request: Request) -> tuple[str, Principal] | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        return token, await gateway.auth.session_token(token)
    except ApiError:
        return None


def _signin(
    request: Request,
    user_code: str,
    *,
    email: str = "",
    error: str | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = _render("signin.html", status, headers, user_code=user_code, email=email, error=error, csrf=csrf)
    response.set_cookie(CSRF_COOKIE, csrf, path="/device", secure=_https(request), httponly=True, samesite="lax")
    return response


async def _code_form(
    gateway: Gateway, token: str, principal: Principal, user_code: str, *, error: str | None = None, status: int = 200
) -> Response:
    user = await gateway.store.get_user(principal.user_id) if principal.user_id else None
    return _render(
        "code.html", status, None, user_code=user_code, email=user.email if user else "", error=error, csrf=_csrf_token(token)
    )


def _message(title: str, text: str, status: int, *, token: str | None = None) -> Response:
    csrf = _csrf_token(token) if token else None
    return _render("message.html", status, None, title=title, text=text, error=status >= 400, csrf=csrf)


def _forbidden() -> Response:
    return _message("Form expired", "This form is no longer valid. Reload the page and try again.", 403)


def _render(template: str, status: int, headers: dict[str, str] | None, **context: Any) -> Response:
    html = _TEMPLATES.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status, headers={**(headers or {}), **_HEADERS})


def _redirect(user_code: str) -> Response:
    target = "/device" + (f"?{urlencode({'user_code': user_code})}" if user_code else "")
    return RedirectResponse(target, status_code=303, headers=_HEADERS)


async def _form(request: Request) -> dict[str, str] | None:
    """The url-encoded form, first value per field; None when it is over the size cap."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > _MAX_FORM_BYTES:
        return None
    body = b""
    async for part in request.stream():
        body += part
        if len(body) > _MAX_FORM_BYTES:
            return None
    try:
        pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=16)
    except ValueError:  # too many fields
        return None
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value.replace("\x00", ""))  # PostgreSQL text cannot hold U+0000
    return fields


def _csrf_token(session_token: str) -> str:
    return hmac.new(session_token.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def _csrf_ok(session_token: str, submitted: str) -> bool:
    return hmac.compare_digest(_csrf_token(session_token).encode(), submitted.encode())


async def _revoke(gateway: Gateway, token: str) -> None:
    digest = hash_secret(token)
    await gateway.store.revoke_session(digest)
    await gateway.auth.revoke(digest)


def _clean_code(raw: str) -> str:
    return normalize_user_code(raw[:64])[:9]


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


# The device-login page for people (HTML, not part of the API).
ROUTES = [
    Route("/device", device_page, methods=["GET"], include_in_schema=False),
    Route("/device/login", device_login, methods=["POST"], include_in_schema=False),
    Route("/device/decide", device_decide, methods=["POST"], include_in_schema=False),
    Route("/device/logout", device_logout, methods=["POST"], include_in_schema=False),
]
