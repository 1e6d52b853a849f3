"""The device-login page: a real sign-in and approval in headless Chromium, then the page's
states, CSRF defences, sign-out and security headers over plain HTTP."""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import time
import uuid
from typing import Any, Awaitable, Callable

import httpx
import pytest

from tests.databases import query
from voxrouter.router.accounts.auth import hash_secret
from voxrouter.router.accounts.passwords import hash_password_sync
from voxrouter.router.accounts.routes import USER_CODE_ALPHABET
from voxrouter.router.store import open_store
from voxrouter.router.store.base import Store

PASSWORD = "correct horse battery"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
APPROVED = "Device approved. You can return to your terminal."
_HASH = hash_password_sync(PASSWORD)  # scrypt once, not per test


def _with_store(gateway, action: Callable[[Store], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        store = await open_store(gateway.settings.database_url)
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _user(gateway) -> tuple[str, str]:
    """A fresh user straight in the gateway's database, as `voxrouter admin create-user` makes one."""
    email = f"u{uuid.uuid4().hex[:10]}@example.com"
    user = _with_store(gateway, lambda store: store.create_account(f"org-{uuid.uuid4().hex[:10]}", email, _HASH))
    return email, user.id


def _start(gateway) -> dict[str, Any]:
    response = httpx.post(gateway.url + "/v1/auth/device-code")
    assert response.status_code == 200
    return response.json()


def _poll(gateway, device_code: str) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/auth/poll", json={"device_code": device_code})


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field in the page"
    return match.group(1)


def _client(gateway) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, follow_redirects=False, timeout=10)


def _sign_in(client: httpx.Client, email: str, user_code: str = "") -> httpx.Response:
    form = client.get("/device", params={"user_code": user_code} if user_code else None)
    assert form.status_code == 200
    response = client.post(
        "/device/login", data={"email": email, "password": PASSWORD, "user_code": user_code, "csrf": _csrf(form.text)}
    )
    assert response.status_code == 303, response.text
    return response


def _decide(client: httpx.Client, user_code: str, action: str = "approve") -> httpx.Response:
    page = client.get("/device", params={"user_code": user_code})
    return client.post("/device/decide", data={"user_code": user_code, "action": action, "csrf": _csrf(page.text)})


def _state(gateway, user_code: str) -> str:
    return query(gateway.settings.database_url, "SELECT state FROM device_codes WHERE user_code = ?", user_code)[0][0]


def _assert_page_headers(response: httpx.Response) -> None:
    csp = response.headers["content-security-policy"]
    for directive in ("default-src 'none'", "form-action 'self'", "frame-ancestors 'none'"):
        assert directive in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"


def test_device_login_in_chromium(gateway):
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing: pip install -e '.[test]'")
    email, user_id = _user(gateway)
    start = _start(gateway)
    pending = _poll(gateway, start["device_code"])
    assert pending.status_code == 400 and pending.json()["error"] == "authorization_pending"

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            page = context.new_page()
            problems: list[str] = []
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))

            first = page.goto(start["verification_uri_complete"])
            assert first is not None and first.status == 200
            assert page.locator("h1").inner_text() == "Sign in to approve a device"
            page.fill("#email", email)
            page.fill("#password", PASSWORD)
            with page.expect_navigation():
                page.click("#sign-in")
            assert page.url == start["verification_uri_complete"]
            assert page.input_value("#user_code") == start["user_code"]
            (cookie,) = [c for c in context.cookies() if c["name"] == "vr_web"]
            assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/"
            assert cookie["value"] not in page.content()

            with page.expect_navigation():
                page.click("#approve")
            assert page.locator("#message").inner_text() == APPROVED
            assert problems == []  # no CSP violation, no script error
        finally:
            browser.close()

    session = _poll(gateway, start["device_code"])
    assert session.status_code == 200, session.text
    body = session.json()
    assert set(body) == {"session_token", "expires_at", "user_id"} and body["user_id"] == user_id
    me = httpx.get(gateway.url + "/v1/auth/whoami", headers={"Authorization": f"Bearer {body['session_token']}"})
    assert me.status_code == 200 and me.json()["auth"] == "session" and me.json()["user_id"] == user_id
    replay = _poll(gateway, start["device_code"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_device_code"


def test_the_page_asks_to_sign_in_and_keeps_the_code(gateway):
    with _client(gateway) as client:
        page = client.get("/device", params={"user_code": "bcdf ghjk"})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'action="/device/login"' in page.text and 'name="password"' in page.text
        assert '<input type="hidden" name="user_code" value="BCDF-GHJK">' in page.text
        assert 'action="/device/decide"' not in page.text
        csrf_cookie = page.headers["set-cookie"]
        assert csrf_cookie.startswith("vr_csrf=") and "HttpOnly" in csrf_cookie and "SameSite=lax" in csrf_cookie
        assert _csrf(page.text) == client.cookies["vr_csrf"]
        hostile = client.get("/device", params={"user_code": '"><script>alert(1)</script>'})
        assert "<script>" not in hostile.text


def test_wrong_password_and_too_many_attempts(gateway):
    email, _ = _user(gateway)
    with _client(gateway) as client:
        csrf = _csrf(client.get("/device").text)
        wrong = {"email": email, "password": "not the password", "user_code": "", "csrf": csrf}
        for _ in range(5):
            page = client.post("/device/login", data=wrong)
            assert page.status_code == 401 and "Wrong email or password." in page.text
            assert "vr_web" not in page.headers.get("set-cookie", "") and "not the password" not in page.text
        throttled = client.post("/device/login", data={**wrong, "password": PASSWORD})
        assert throttled.status_code == 429 and "Too many failed sign-ins" in throttled.text
        assert int(throttled.headers["retry-after"]) > 0 and "vr_web" not in client.cookies

        escaped = client.post("/device/login", data={**wrong, "email": '"><b>x</b>@example.com'})
        assert escaped.status_code == 401 and "<b>x</b>" not in escaped.text and "&lt;b&gt;x&lt;/b&gt;" in escaped.text


def test_posts_without_a_valid_csrf_token_are_refused(gateway):
    email, _ = _user(gateway)
    start = _start(gateway)
    with _client(gateway) as client:
        client.get("/device")
        for token in ({}, {"csrf": "forged"}):
            login = client.post("/device/login", data={"email": email, "password": PASSWORD, **token})
            assert login.status_code == 403 and "vr_web" not in client.cookies
        _sign_in(client, email)
        for token in ({}, {"csrf": client.cookies["vr_web"]}, {"csrf": "0" * 64}):
            decided = client.post("/device/decide", data={"user_code": start["user_code"], "action": "approve", **token})
            assert decided.status_code == 403
            _assert_page_headers(decided)
        assert _state(gateway, start["user_code"]) == "pending"
        assert client.post("/device/logout", data={}).status_code == 403
        assert 'action="/device/decide"' in client.get("/device").text  # still signed in


def test_deny_then_the_poll_says_access_denied(gateway):
    email, _ = _user(gateway)
    start = _start(gateway)
    with _client(gateway) as client:
        _sign_in(client, email, start["user_code"])
        denied = _decide(client, start["user_code"].lower().replace("-", ""), "deny")
        assert denied.status_code == 200 and "Login denied" in denied.text
    poll = _poll(gateway, start["device_code"])
    assert poll.status_code == 400 and poll.json()["error"] == "access_denied"


def test_unknown_malformed_expired_and_used_codes(gateway):
    email, _ = _user(gateway)
    start = _start(gateway)
    expired = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(8))
    expired = f"{expired[:4]}-{expired[4:]}"
    past_ms = int(time.time() * 1000) - 1_000
    _with_store(gateway, lambda store: store.create_device_code(hash_secret(f"vr_device_{expired}"), expired, past_ms, 5))
    with _client(gateway) as client:
        _sign_in(client, email)
        unknown = _decide(client, "ZZZZ-ZZZZ")
        assert unknown.status_code == 404 and "No pending login with code ZZZZ-ZZZZ" in unknown.text
        malformed = _decide(client, "ABC")
        assert malformed.status_code == 400 and "Enter the 8-letter code" in malformed.text
        assert _decide(client, expired).status_code == 404 and _state(gateway, expired) == "pending"

        assert _decide(client, start["user_code"]).status_code == 200
        assert _decide(client, start["user_code"]).status_code == 404  # decided already
        assert _poll(gateway, start["device_code"]).status_code == 200
        used = _decide(client, start["user_code"], "deny")
        assert used.status_code == 404 and _state(gateway, start["user_code"]) == "consumed"


def test_sign_out_revokes_the_web_session(gateway):
    email, user_id = _user(gateway)
    with _client(gateway) as client:
        login = _sign_in(client, email, "BCDF-GHJK")
        assert login.headers["location"] == "/device?user_code=BCDF-GHJK"
        cookie = login.headers["set-cookie"]
        assert cookie.startswith("vr_web=vr_session_") and "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "Path=/;" in cookie and "Secure" not in cookie  # plain http on loopback
        token = client.cookies["vr_web"]
        page = client.get("/device")
        assert email in page.text and token not in page.text
        kind = query(gateway.settings.database_url, "SELECT kind FROM sessions WHERE token_hash = ?", hash_secret(token))
        assert kind == [("web",)]

        out = client.post("/device/logout", data={"csrf": _csrf(page.text)})
        assert out.status_code == 303 and out.headers["location"] == "/device"
        assert "vr_web" not in client.cookies
    with _client(gateway) as stale:
        stale.cookies.set("vr_web", token)
        assert 'action="/device/login"' in stale.get("/device").text
        late = stale.post("/device/decide", data={"user_code": "BCDF-GHJK", "action": "approve", "csrf": "x"})
        assert late.status_code == 401 and "Sign in again" in late.text
    whoami = httpx.get(gateway.url + "/v1/auth/whoami", headers={"Authorization": f"Bearer {token}"})
    assert whoami.status_code == 401


def test_security_headers_on_every_page(gateway):
    email, _ = _user(gateway)
    with _client(gateway) as client:
        pages = [client.get("/device"), client.post("/device/login", data={"email": email, "password": "x"})]
        pages.append(_sign_in(client, email))
        pages += [client.get("/device"), _decide(client, "ZZZZ-ZZZZ")]
        for response in pages:
            _assert_page_headers(response)
        assert [r.status_code for r in pages] == [200, 403, 303, 200, 404]
