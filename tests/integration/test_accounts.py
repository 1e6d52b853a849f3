"""Accounts over the wire: sign-up, password login and its throttle, the device flow's
states, sessions, keys with limits, and a usage row for every request."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from tests.conftest import emulated_config, running_gateway
from tests.databases import query
from voxrouter.providers.spec import estimate_cost_micros
from voxrouter.router.accounts.auth import hash_secret
from voxrouter.router.accounts.passwords import verify_password_sync
from voxrouter.router.store import open_store

PASSWORD = "correct horse battery"


def _email() -> str:
    return f"u{uuid.uuid4().hex[:10]}@example.com"


def _register(gateway, email: str | None = None, **extra) -> dict:
    response = httpx.post(gateway.url + "/v1/auth/register", json={"email": email or _email(), "password": PASSWORD, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def _session(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_register_login_whoami_logout(gateway):
    email = _email()
    account = _register(gateway, email.upper())  # emails are case-insensitive
    assert account["session_token"].startswith("vr_session_") and account["org_id"].startswith("org_")
    again = httpx.post(gateway.url + "/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert again.status_code == 409 and again.json()["error"] == "conflict"

    login = httpx.post(gateway.url + "/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200
    session = login.json()
    assert set(session) == {"session_token", "expires_at", "user_id"} and session["user_id"] == account["user_id"]
    days = (time.mktime(time.strptime(session["expires_at"][:19], "%Y-%m-%dT%H:%M:%S")) - time.mktime(time.gmtime())) / 86400
    assert 89.9 < days < 90.1

    me = httpx.get(gateway.url + "/v1/auth/whoami", headers=_session(session["session_token"])).json()
    assert me == {
        "user_id": account["user_id"],
        "auth": "session",
        "expires_at": session["expires_at"],
        "org_id": account["org_id"],
        "email": email,
    }
    out = httpx.post(gateway.url + "/v1/auth/logout", headers=_session(session["session_token"]))
    assert out.json() == {"revoked": True}
    assert httpx.post(gateway.url + "/v1/auth/logout", headers=_session(session["session_token"])).json() == {"revoked": False}
    gone = httpx.get(gateway.url + "/v1/auth/whoami", headers=_session(session["session_token"]))
    assert gone.status_code == 401 and gone.json()["error"] == "unauthorized"
    # The other session (from sign-up) is untouched.
    assert httpx.get(gateway.url + "/v1/auth/whoami", headers=_session(account["session_token"])).status_code == 200

    stored = query(gateway.settings.database_url, "SELECT password_hash FROM users WHERE email = ?", email)[0][0]
    assert stored.startswith("scrypt$") and PASSWORD not in stored and verify_password_sync(PASSWORD, stored)
    tokens = query(gateway.settings.database_url, "SELECT token_hash FROM sessions")
    assert (hash_secret(session["session_token"]),) in tokens
    assert all(session["session_token"] not in row[0] for row in tokens)


def test_wrong_passwords_are_throttled_per_email(gateway):
    # One client guessing one account: its (client, email) pair is throttled for the window
    # (other clients are not: tests/integration/test_accounts_hardening.py).
    email = _email()
    _register(gateway, email)
    for _ in range(5):
        wrong = httpx.post(gateway.url + "/v1/auth/login", json={"email": email, "password": "not it at all"})
        assert wrong.status_code == 401 and wrong.json() == {"error": "unauthorized", "details": "wrong email or password"}
    locked = httpx.post(gateway.url + "/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert locked.status_code == 429 and locked.json()["error"] == "rate_limited"
    assert 800 < int(locked.headers["retry-after"]) <= 900
    # An unknown email answers exactly like a wrong password.
    unknown = httpx.post(gateway.url + "/v1/auth/login", json={"email": _email(), "password": PASSWORD})
    assert unknown.status_code == 401 and unknown.json()["details"] == "wrong email or password"


def test_the_client_throttle_and_closed_registration(emulators, tmp_path):
    config = emulated_config(emulators)
    config = config.model_copy(
        update={"auth": config.auth.model_copy(update={"login_failures_per_client": 3, "allow_registration": False})}
    )
    with running_gateway(tmp_path, config) as gw:
        closed = httpx.post(gw.url + "/v1/auth/register", json={"email": _email(), "password": PASSWORD})
        assert closed.status_code == 403 and closed.json()["error"] == "registration_closed"
        for _ in range(3):  # a different email each time: guessing across accounts
            assert httpx.post(gw.url + "/v1/auth/login", json={"email": _email(), "password": "x" * 9}).status_code == 401
        throttled = httpx.post(gw.url + "/v1/auth/login", json={"email": _email(), "password": "x" * 9})
        assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) > 0


@pytest.mark.parametrize(
    "body",
    [b"{", b"[]", b'{"email": 5, "password": "abcdefgh"}', b'{"email": "a@b", "password": "short"}', b'{"email": "nope", "password": "abcdefghi"}'],
)
def test_bad_sign_up_bodies_are_400(gateway, body):
    response = httpx.post(gateway.url + "/v1/auth/register", content=body)
    assert response.status_code == 400 and response.json()["error"] == "invalid_body"


def test_device_flow_states_over_the_api(gateway):
    account = _register(gateway)
    start = httpx.post(gateway.url + "/v1/auth/device-code").json()
    assert set(start) == {"device_code", "user_code", "verification_uri", "verification_uri_complete", "expires_in", "interval"}
    assert start["verification_uri"] == gateway.url + "/device"
    assert start["verification_uri_complete"] == f"{gateway.url}/device?user_code={start['user_code']}"
    assert (start["expires_in"], start["interval"]) == (900, 5)
    assert len(start["user_code"]) == 9 and start["user_code"][4] == "-"

    def poll(code: str = start["device_code"]) -> httpx.Response:
        return httpx.post(gateway.url + "/v1/auth/poll", json={"device_code": code})

    pending = poll()
    assert pending.status_code == 400 and pending.json()["error"] == "authorization_pending"
    fast = poll()
    assert fast.status_code == 400 and fast.json()["error"] == "slow_down" and "10 seconds" in fast.json()["details"]
    assert poll("vr_device_made-up").json()["error"] == "invalid_device_code"

    typed = start["user_code"].replace("-", " ").lower()  # what a person might type
    approve = httpx.post(
        gateway.url + "/v1/auth/device/approve", json={"user_code": typed}, headers=_session(account["session_token"])
    )
    assert approve.status_code == 200 and approve.json() == {"user_code": start["user_code"], "state": "approved"}
    again = httpx.post(
        gateway.url + "/v1/auth/device/approve", json={"user_code": start["user_code"]}, headers=_session(account["session_token"])
    )
    assert again.status_code == 404  # already decided

    done = poll()
    assert done.status_code == 200
    session = done.json()
    assert session["user_id"] == account["user_id"] and session["session_token"].startswith("vr_session_")
    me = httpx.get(gateway.url + "/v1/auth/whoami", headers=_session(session["session_token"])).json()
    assert me["auth"] == "session" and me["user_id"] == account["user_id"]
    replay = poll()
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_device_code"


def test_denied_device_code(gateway):
    account = _register(gateway)
    start = httpx.post(gateway.url + "/v1/auth/device-code").json()
    deny = httpx.post(
        gateway.url + "/v1/auth/device/approve",
        json={"user_code": start["user_code"], "approve": False},
        headers=_session(account["session_token"]),
    )
    assert deny.json()["state"] == "denied"
    denied = httpx.post(gateway.url + "/v1/auth/poll", json={"device_code": start["device_code"]})
    assert denied.status_code == 400 and denied.json()["error"] == "access_denied"
    assert httpx.post(gateway.url + "/v1/auth/poll", json={"device_code": start["device_code"]}).json()["error"] == "invalid_device_code"


@pytest.mark.anyio
async def test_an_expired_device_code_cannot_be_approved_or_polled(database_url):
    store = await open_store(database_url)
    try:
        user = await store.create_account("acme", "a@example.com", None)
        now = int(time.time() * 1000)
        await store.create_device_code(hash_secret("vr_device_x"), "BCDF-GHJK", now + 1_000, 5)
        late = now + 1_001
        assert await store.decide_device_code("BCDF-GHJK", user.id, True, late) is False
        poll = await store.poll_device_code(hash_secret("vr_device_x"), late, hash_secret("vr_session_y"), "2099-01-01T00:00:00.000Z")
        assert poll.outcome == "expired_token"
        assert await store.find_session(hash_secret("vr_session_y")) is None
    finally:
        await store.close()


def test_keys_create_list_delete_and_limits(gateway, emulators):
    account = _register(gateway)
    headers = _session(account["session_token"])
    created = httpx.post(
        gateway.url + "/v1/keys", json={"name": "ci", "maxConcurrency": 1, "dailyLimitMicros": 2_000}, headers=headers
    )
    assert created.status_code == 201
    key, secret = created.json()["key"], created.json()["secret"]
    assert secret.startswith("pk_") and key["keySuffix"] == secret[-4:]
    assert key["maxConcurrency"] == 1 and key["dailyLimitMicros"] == 2_000 and key["createdBy"] == account["user_id"]
    assert key["lastUsedAt"] is None
    listed = httpx.get(gateway.url + "/v1/keys", headers=headers).json()
    assert [k["id"] for k in listed] == [key["id"]] and "secret" not in listed[0]
    assert {"id", "name", "keySuffix", "maxConcurrency", "createdAt", "lastUsedAt"} <= set(listed[0])

    # Money: a wallet with credit, but the key's daily cap admits one 1,500 request only.
    asyncio.run(_topup(gateway.settings.database_url, account["org_id"], 1_000_000))
    emulators["openai"].state.behaviour.stream_time_s = 0.6
    speech = {"model": "openai/tts-1", "voice": "alloy", "input": "x" * 100, "response_format": "pcm"}
    with httpx.Client(base_url=gateway.url, headers=_session(secret), timeout=10) as client:
        with client.stream("POST", "/v1/audio/speech", json=speech) as first:
            assert first.status_code == 200
            busy = client.post("/v1/audio/speech", json=speech)
            assert busy.status_code == 429 and busy.json()["error"] == "concurrency_limited"
            first.read()
        capped = client.post("/v1/audio/speech", json=speech)
        assert capped.status_code == 402 and capped.json()["error"] == "spend_limit_exceeded"
        assert "daily" in capped.json()["details"]
        cost = estimate_cost_micros(100, 15_000)
        assert client.get("/v1/credits").json() == {"balanceMicros": 1_000_000 - cost, "reservedMicros": 0}
        usage = client.get("/v1/usage?days=1&limit=10").json()
    assert usage["totals"] == {"requests": 3, "costMicros": cost, "errorCount": 2}
    assert usage["byProvider"] == [{"provider": "openai", "requests": 3, "costMicros": cost}]
    assert sorted((e["code"], e["count"]) for e in usage["byErrorCode"]) == [("concurrency_limited", 1), ("spend_limit_exceeded", 1)]
    # The 429 and the 200 may share a millisecond, so only the set of outcomes is certain.
    assert sorted((r["status"], r["code"] or "") for r in usage["recent"]) == [
        (200, ""),
        (402, "spend_limit_exceeded"),
        (429, "concurrency_limited"),
    ]
    assert {r["model"] for r in usage["recent"]} == {"openai/tts-1"}

    used = httpx.get(gateway.url + "/v1/keys", headers=headers).json()[0]
    assert used["lastUsedAt"] is not None  # seen by this replica, written to the database in batches

    revoked = httpx.delete(gateway.url + f"/v1/keys/{key['id']}", headers=headers)
    assert revoked.status_code == 200 and revoked.json() == {"id": key["id"], "revoked": True}
    assert httpx.get(gateway.url + "/v1/credits", headers=_session(secret)).status_code == 401
    assert httpx.get(gateway.url + "/v1/keys", headers=headers).json() == []
    assert httpx.delete(gateway.url + f"/v1/keys/{key['id']}", headers=headers).status_code == 404


async def _topup(url: str, org_id: str, micros: int) -> None:
    store = await open_store(url)
    try:
        await store.topup(org_id, micros, "admin", "test")
    finally:
        await store.close()


@pytest.mark.parametrize(
    "body", [{}, {"name": ""}, {"name": "x", "maxConcurrency": 0}, {"name": "x", "dailyLimitMicros": -1}, {"name": "x", "extra": 1}]
)
def test_bad_key_bodies_are_400(gateway, body):
    token = _register(gateway)["session_token"]
    response = httpx.post(gateway.url + "/v1/keys", json=body, headers=_session(token))
    assert response.status_code == 400 and response.json()["error"] == "invalid_body"


def test_every_failed_request_leaves_a_usage_row(gateway):
    key = gateway.new_key(0.0)  # no credit
    headers = _session(key)
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=10) as client:
        assert client.post("/v1/audio/speech", content=b"{").status_code == 400
        assert client.post("/v1/audio/speech", json={"model": "nope/x", "voice": "a", "input": "b"}).status_code == 400
        assert client.post("/v1/audio/speech", json={"model": "openai/tts-1", "voice": "alloy", "input": "hi"}).status_code == 402
        usage = client.get("/v1/usage").json()
    assert usage["totals"] == {"requests": 3, "costMicros": 0, "errorCount": 3}
    assert sorted((e["code"], e["count"]) for e in usage["byErrorCode"]) == [("insufficient_credit", 1), ("invalid_body", 1), ("invalid_model", 1)]
    for bad in ("days=0", "days=366", "limit=0", "limit=1001", "days=x"):
        response = httpx.get(gateway.url + f"/v1/usage?{bad}", headers=headers)
        assert response.status_code == 400 and response.json()["error"] == "invalid_body"
