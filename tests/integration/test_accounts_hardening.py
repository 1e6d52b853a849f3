"""Accounts against an attacker with a self-registered account (issue 14): operator ceilings
on a key's limits, a cap on keys per organization, the sign-up throttle and bounded password
hashing, a login throttle that cannot lock a victim out, revocation on every replica at once,
and no Host header reflected into a login link.

Each test runs its gateways in the test's own event loop and calls them through
`httpx.ASGITransport`, so a request can come from any client address."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest
import redis.asyncio
from starlette.applications import Starlette

import voxrouter.router.accounts.passwords
from tests.conftest import emulated_config
from tests.databases import REDIS_URL, delete_redis_prefix, query, redis_unavailable
from voxrouter.router.accounts.auth import hash_secret
from voxrouter.router.accounts.passwords import hash_password_sync
from voxrouter.router.config import Config, LimitValues
from voxrouter.router.gateway import running_gateway
from voxrouter.router.http.app import create_app
from voxrouter.router.settings import Settings
from voxrouter.router.store import open_store

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

PASSWORD = "correct horse battery"
ATTACKER, VICTIM = "203.0.113.66", "198.51.100.7"


def _email() -> str:
    return f"h{uuid.uuid4().hex[:10]}@example.com"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _config(emulators: dict[str, Any], **auth: Any) -> Config:
    config = emulated_config(emulators)
    return config.model_copy(update={"auth": config.auth.model_copy(update=auth)})


@contextlib.asynccontextmanager
async def _replica(settings: Settings) -> AsyncIterator[Starlette]:
    """A gateway in this event loop (what the app's lifespan would do)."""
    app = create_app(settings)
    async with running_gateway(settings) as gateway:
        app.state.gateway = gateway
        yield app


def _client(app: Starlette, address: str = "192.0.2.1", host: str = "127.0.0.1:8080") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40_000))
    return httpx.AsyncClient(transport=transport, base_url=f"http://{host}", timeout=10)


async def _register(client: httpx.AsyncClient, email: str | None = None) -> dict[str, Any]:
    response = await client.post("/v1/auth/register", json={"email": email or _email(), "password": PASSWORD})
    assert response.status_code == 201, response.text
    return response.json()


async def _account_in_store(database_url: str, email: str) -> str:
    """An organization and its user straight in the database; the organization id."""
    store = await open_store(database_url)
    try:
        return (await store.create_account(f"org-{uuid.uuid4().hex[:10]}", email, hash_password_sync(PASSWORD))).org_id
    finally:
        await store.close()


async def test_key_limits_above_the_organization_ceiling_are_refused_and_not_stored(emulators, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    email = _email()
    org_id = await _account_in_store(url, email)
    config = emulated_config(emulators)
    limits = config.limits.model_copy(
        update={
            "defaults": LimitValues(requests_per_minute=600, characters_per_minute=600_000),
            "organizations": {org_id: LimitValues(requests_per_minute=100, max_concurrency=4)},
        }
    )
    async with _replica(Settings(database_url=url, config=config.model_copy(update={"limits": limits}))) as app:
        async with _client(app) as client:
            session = (await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})).json()["session_token"]
            for body, field, ceiling in (
                ({"requestsPerMinute": 10_000_000, "maxConcurrency": 10_000}, "requestsPerMinute", "100"),
                ({"requestsPerMinute": 101}, "requestsPerMinute", "100"),
                ({"maxConcurrency": 5}, "maxConcurrency", "4"),
                ({"charactersPerMinute": 600_001}, "charactersPerMinute", "600000"),  # the org sets none: the defaults'
            ):
                refused = await client.post("/v1/keys", json={"name": "greedy", **body}, headers=_bearer(session))
                assert refused.status_code == 400, refused.text
                assert refused.json()["error"] == "invalid_body"
                assert field in refused.json()["details"] and ceiling in refused.json()["details"]
            assert query(url, "SELECT COUNT(*) FROM api_keys") == [(0,)]  # nothing stored

            at_ceiling = {"requestsPerMinute": 100, "maxConcurrency": 4, "charactersPerMinute": 600_000}
            ok = await client.post("/v1/keys", json={"name": "fair", **at_ceiling}, headers=_bearer(session))
            assert ok.status_code == 201, ok.text
            assert query(url, "SELECT requests_per_minute, max_concurrency FROM api_keys") == [(100, 4)]


async def test_live_keys_per_organization_are_capped(emulators, database_url: str) -> None:
    config = _config(emulators, max_keys_per_org=3)
    async with _replica(Settings(database_url=database_url, config=config)) as app, _client(app) as client:
        account = await _register(client)
        headers = _bearer(account["session_token"])
        # Ten at once: the count and the insert are one transaction, so exactly three get in.
        answers = await asyncio.gather(*(client.post("/v1/keys", json={"name": f"k{i}"}, headers=headers) for i in range(10)))
        assert sorted(r.status_code for r in answers) == [201] * 3 + [409] * 7
        refused = next(r for r in answers if r.status_code == 409).json()
        assert refused["error"] == "conflict" and "3" in refused["details"] and "revoke" in refused["details"]
        keys = (await client.get("/v1/keys", headers=headers)).json()
        assert len(keys) == 3
        # A revoked key frees its place; other organizations have their own allowance.
        assert (await client.delete(f"/v1/keys/{keys[0]['id']}", headers=headers)).status_code == 200
        assert (await client.post("/v1/keys", json={"name": "again"}, headers=headers)).status_code == 201
        assert (await client.post("/v1/keys", json={"name": "over"}, headers=headers)).status_code == 409
        other = _bearer((await _register(client))["session_token"])
        assert (await client.post("/v1/keys", json={"name": "theirs"}, headers=other)).status_code == 201


async def test_sign_ups_are_throttled_per_client_address(emulators, tmp_path: Path) -> None:
    config = _config(emulators, registrations_per_client=3, registration_window_s=600)
    async with _replica(Settings(database_url=f"sqlite:///{tmp_path / 'gw.db'}", config=config)) as app:
        async with _client(app, ATTACKER) as attacker, _client(app, VICTIM) as other:
            email = _email()
            await _register(attacker, email)
            await _register(attacker)
            taken = await attacker.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
            assert taken.status_code == 409  # it cost a hash, so it counts
            throttled = await attacker.post("/v1/auth/register", json={"email": _email(), "password": PASSWORD})
            assert throttled.status_code == 429 and throttled.json()["error"] == "rate_limited"
            assert 0 < int(throttled.headers["retry-after"]) <= 600
            # Two hundred at once from the same address: all refused, none hashed.
            burst = await asyncio.gather(
                *(attacker.post("/v1/auth/register", json={"email": _email(), "password": PASSWORD}) for _ in range(200))
            )
            assert {r.status_code for r in burst} == {429}
            # Another address is not held by this one.
            await _register(other)
    assert query(f"sqlite:///{tmp_path / 'gw.db'}", "SELECT COUNT(*) FROM users") == [(3,)]


async def test_concurrent_password_hashing_is_bounded(emulators, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    running, peak, lock = 0, 0, threading.Lock()
    derive = voxrouter.router.accounts.passwords._derive

    def counted(*args: Any, **kwargs: Any) -> bytes:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.02)  # long enough for every waiting request to pile up
            return derive(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(voxrouter.router.accounts.passwords, "_derive", counted)
    config = _config(emulators, password_hash_concurrency=2, registrations_per_client=1_000)
    async with _replica(Settings(database_url=f"sqlite:///{tmp_path / 'gw.db'}", config=config)) as app, _client(app) as client:
        emails = [_email() for _ in range(20)]
        answers = await asyncio.gather(
            *(client.post("/v1/auth/register", json={"email": e, "password": PASSWORD}) for e in emails)
        )
        assert [r.status_code for r in answers] == [201] * 20
        assert peak == 2, f"{peak} scrypt runs at once; configured 2"
        # Verifying (logins, right and wrong, known and unknown emails) waits its turn too.
        peak = 0
        logins = await asyncio.gather(
            *(
                client.post("/v1/auth/login", json={"email": e, "password": PASSWORD if i % 2 else "wrong password"})
                for i, e in enumerate(emails[:10] + [_email()] * 4)
            )
        )
        assert sorted({r.status_code for r in logins}) == [200, 401]
        assert peak == 2, f"{peak} scrypt runs at once; configured 2"


async def test_a_victim_is_not_locked_out_by_anothers_wrong_passwords(emulators, tmp_path: Path) -> None:
    config = _config(
        emulators,
        login_failures_per_email=5,
        login_failures_per_client_email=5,
        login_failures_per_client=30,
        login_email_backoff_s=2.0,
    )
    async with _replica(Settings(database_url=f"sqlite:///{tmp_path / 'gw.db'}", config=config)) as app:
        async with _client(app, ATTACKER) as attacker, _client(app, VICTIM) as victim:
            email = _email()
            await _register(victim, email)
            wrong = {"email": email, "password": "not the password"}
            answers = [(await attacker.post("/v1/auth/login", json=wrong)).status_code for _ in range(6)]
            assert answers == [401] * 5 + [429]  # the attacker's own (address, email) pair is throttled
            held = await attacker.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
            assert held.status_code == 429 and int(held.headers["retry-after"]) > 60  # even with the right one
            # More addresses join in: the email is over its failure count from everywhere.
            for n in range(3):  # none has failed for this email before: none is held by the others
                async with _client(app, f"203.0.113.{n + 1}") as helper:
                    assert (await helper.post("/v1/auth/login", json=wrong)).status_code == 401
            # A client that has itself failed for an email under attack gets a short backoff, never a lock.
            async with _client(app, "203.0.113.1") as helper:
                backoff = await helper.post("/v1/auth/login", json=wrong)
                assert backoff.status_code == 429 and 1 <= int(backoff.headers["retry-after"]) <= 2

            # The victim, from their own address, with the right password: at once.
            ok = await victim.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
            assert ok.status_code == 200, ok.text
            # The device page's sign-in uses the same check.
            page = await victim.get("/device")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf is not None
            signed_in = await victim.post(
                "/device/login", data={"email": email, "password": PASSWORD, "csrf": csrf.group(1), "user_code": ""}
            )
            assert signed_in.status_code == 303, signed_in.text

            # The victim mistypes once: now one of the failing clients, it waits the short backoff at most.
            typo = await victim.post("/v1/auth/login", json=wrong)
            assert typo.status_code == 401
            deadline = time.monotonic() + 3
            while (again := await victim.post("/v1/auth/login", json={"email": email, "password": PASSWORD})).status_code == 429:
                assert int(again.headers["retry-after"]) <= 2 and time.monotonic() < deadline
                await asyncio.sleep(0.2)
            assert again.status_code == 200, again.text


def _two_replicas_settings(tmp_path: Path, emulators: dict[str, Any], **extra: Any) -> Settings:
    config = _config(emulators, key_cache_ttl_s=60.0)  # the cache alone would keep a revoked credential a minute
    return Settings(database_url=f"sqlite:///{tmp_path / 'shared.db'}", config=config, **extra)


async def test_a_logged_out_session_cannot_mint_a_key_on_another_replica(emulators, tmp_path: Path) -> None:
    settings = _two_replicas_settings(tmp_path, emulators)  # no Redis: the cache TTL is all that spreads a logout
    async with _replica(settings) as app_a, _replica(settings) as app_b, _client(app_a) as a, _client(app_b) as b:
        session = _bearer((await _register(a))["session_token"])
        assert (await b.get("/v1/keys", headers=session)).status_code == 200  # cached on B
        assert (await a.post("/v1/auth/logout", headers=session)).json() == {"revoked": True}
        minted = await b.post("/v1/keys", json={"name": "after logout"}, headers=session)
        assert minted.status_code == 401 and minted.json()["error"] == "unauthorized"
        assert query(settings.database_url, "SELECT COUNT(*) FROM api_keys") == [(0,)]


@pytest.mark.skipif(bool(redis_unavailable()), reason=redis_unavailable() or "")
async def test_revocation_reaches_every_replica_at_once_through_redis(emulators, tmp_path: Path) -> None:
    prefix = f"vrtest{uuid.uuid4().hex[:8]}"
    settings = _two_replicas_settings(tmp_path, emulators, redis_url=REDIS_URL, redis_prefix=prefix)
    try:
        async with _replica(settings) as app_a, _replica(settings) as app_b, _client(app_a) as a, _client(app_b) as b:
            session = _bearer((await _register(a))["session_token"])
            created = (await a.post("/v1/keys", json={"name": "shared"}, headers=session)).json()
            key = _bearer(created["secret"])
            assert (await b.get("/v1/credits", headers=key)).status_code == 200  # cached on B for 60 s
            assert (await b.get("/v1/auth/whoami", headers=session)).status_code == 200

            assert (await a.delete(f"/v1/keys/{created['key']['id']}", headers=session)).status_code == 200
            assert await _refused_soon(b, "/v1/credits", key)
            assert (await a.post("/v1/auth/logout", headers=session)).json() == {"revoked": True}
            assert await _refused_soon(b, "/v1/auth/whoami", session)
    finally:
        delete_redis_prefix(prefix)


@pytest.mark.skipif(bool(redis_unavailable()), reason=redis_unavailable() or "")
async def test_a_replica_that_lost_the_revocation_channel_resubscribes_and_drops_its_cache(emulators, tmp_path: Path) -> None:
    """Revocations published while a replica was not listening are lost: once it is back, it
    clears its cache rather than trust it for the rest of the TTL."""
    prefix = f"vrtest{uuid.uuid4().hex[:8]}"
    settings = _two_replicas_settings(tmp_path, emulators, redis_url=REDIS_URL, redis_prefix=prefix)
    admin = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        async with _replica(settings) as app, _client(app) as client:
            session = (await _register(client))["session_token"]
            assert (await client.get("/v1/auth/whoami", headers=_bearer(session))).status_code == 200  # cached
            # Revoked behind the replica's back, as if the news had come while it was away.
            store = await open_store(settings.database_url)
            try:
                assert await store.revoke_session(hash_secret(session))
            finally:
                await store.close()
            subscribers = [c for c in await admin.client_list() if c.get("name") == f"{prefix}:revoked-subscriber"]
            assert len(subscribers) == 1, "the replica does not listen for revocations"
            await admin.execute_command("CLIENT", "KILL", "ID", subscribers[0]["id"])
            assert await _refused_soon(client, "/v1/auth/whoami", _bearer(session), within_s=3.0)
    finally:
        await admin.aclose()
        delete_redis_prefix(prefix)


async def _refused_soon(client: httpx.AsyncClient, path: str, headers: dict[str, str], within_s: float = 1.0) -> bool:
    """True once `path` answers 401 (pub/sub delivery takes a moment, far less than the cache's TTL)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if (await client.get(path, headers=headers)).status_code == 401:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_revocation_without_a_reachable_redis_still_works_locally(emulators, tmp_path: Path) -> None:
    """Redis down: start-up does not hang, revoking still answers, and this replica drops the
    credential at once (the others within the cache TTL)."""
    settings = _two_replicas_settings(tmp_path, emulators, redis_url="redis://127.0.0.1:1/0", redis_prefix="vrdown")
    started = time.monotonic()
    async with _replica(settings) as app, _client(app) as client:
        assert time.monotonic() - started < 5
        session = _bearer((await _register(client))["session_token"])
        assert (await client.post("/v1/auth/logout", headers=session)).json() == {"revoked": True}
        assert (await client.get("/v1/auth/whoami", headers=session)).status_code == 401


async def test_the_host_header_is_not_reflected_into_the_login_link(emulators, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    async with _replica(Settings(database_url=url, config=_config(emulators, public_url=None))) as app:
        async with _client(app, host="evil.example") as evil:
            refused = await evil.post("/v1/auth/device-code")
            assert refused.status_code == 400 and refused.json()["error"] == "invalid_body"
            assert "auth.public_url" in refused.json()["details"] and "evil" not in refused.text
        async with _client(app, host="evil.example") as evil:
            spoofed = await evil.post("/v1/auth/device-code", headers={"Host": "localhost.evil.example:80"})
            assert spoofed.status_code == 400
        for host in ("127.0.0.1:8080", "localhost:3000", "[::1]:9000"):
            async with _client(app, host=host) as trusted:
                start = await trusted.post("/v1/auth/device-code")
                assert start.status_code == 200, start.text
                assert start.json()["verification_uri"] == f"http://{host}/device"
    config = _config(emulators, public_url="https://tts.example.com/")
    async with _replica(Settings(database_url=url, config=config)) as app, _client(app, host="evil.example") as evil:
        start = await evil.post("/v1/auth/device-code")
        assert start.status_code == 200
        assert start.json()["verification_uri"] == "https://tts.example.com/device"
        assert start.json()["verification_uri_complete"].startswith("https://tts.example.com/device?user_code=")
