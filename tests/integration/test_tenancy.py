"""Tenant isolation, route by route: organization B's credentials never show or touch
organization A's keys, money, usage or identity; within an organization, keys are visible
to the team but only their creator may revoke them; and credentials are only ever what they
claim (an API key is not a session, a revoked session is nothing)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import uuid
from typing import Any

import httpx
import pytest

from tests.databases import query
from voxrouter.router.accounts.auth import SESSION_PREFIX, new_secret
from voxrouter.router.accounts.passwords import hash_password_sync
from voxrouter.router.store import open_store
from voxrouter.router.store.base import iso, utcnow

PASSWORD = "tenancy password 1"
CREDIT_A, CREDIT_B = 5_000_000, 3_000_000  # micro-dollars
SPEECH = {"model": "openai/tts-1", "voice": "alloy", "input": "Only organization A said this."}


@dataclasses.dataclass
class Tenant:
    org_name: str
    org_id: str
    user_id: str
    email: str
    session: str
    key: str  # minted by the user with POST /v1/keys
    key_id: str


@dataclasses.dataclass
class World:
    gateway: Any
    a: Tenant
    b: Tenant
    a2: Tenant  # a second user of A's organization; `key` is A's key (a team mate's)
    a_cost: int  # what A's one speech request cost

    def get(self, path: str, token: str, **params: Any) -> httpx.Response:
        return httpx.get(self.gateway.url + path, headers=_bearer(token), params=params, timeout=10)

    def post(self, path: str, token: str | None, body: Any = None) -> httpx.Response:
        return httpx.post(self.gateway.url + path, headers=_bearer(token) if token else {}, json=body, timeout=10)

    def delete(self, path: str, token: str) -> httpx.Response:
        return httpx.delete(self.gateway.url + path, headers=_bearer(token), timeout=10)

    def db(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return query(self.gateway.settings.database_url, sql, *args)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _email() -> str:
    return f"t{uuid.uuid4().hex[:10]}@example.com"


async def _users(url: str, org_a: str, org_b: str, emails: tuple[str, str, str]):
    store = await open_store(url)
    try:
        password_hash = hash_password_sync(PASSWORD)
        a = await store.create_account(org_a, emails[0], password_hash)
        a2 = await store.create_user(a.org_id, emails[1], password_hash)
        b = await store.create_account(org_b, emails[2], password_hash)
        return a, a2, b
    finally:
        await store.close()


def _login(gateway, email: str) -> str:
    response = httpx.post(gateway.url + "/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return response.json()["session_token"]


def _mint(gateway, session: str, name: str = "tenancy") -> tuple[str, str]:
    response = httpx.post(gateway.url + "/v1/keys", json={"name": name}, headers=_bearer(session))
    assert response.status_code == 201, response.text
    return response.json()["secret"], response.json()["key"]["id"]


@pytest.fixture(scope="module")
def world(gateway) -> World:
    org_a, org_b = f"tenant-a-{uuid.uuid4().hex[:8]}", f"tenant-b-{uuid.uuid4().hex[:8]}"
    emails = (_email(), _email(), _email())
    a, a2, b = asyncio.run(_users(gateway.settings.database_url, org_a, org_b, emails))
    # Credit comes from the operator (`voxrouter admin create-key --credit-usd`), with a key of its own.
    gateway.new_key(CREDIT_A / 1e6, org_a)
    gateway.new_key(CREDIT_B / 1e6, org_b)
    tenants = {}
    for name, user, org in (("a", a, org_a), ("b", b, org_b)):
        session = _login(gateway, user.email)
        key, key_id = _mint(gateway, session, f"{name}'s key")
        tenants[name] = Tenant(org, user.org_id, user.id, user.email, session, key, key_id)
    a2_tenant = dataclasses.replace(tenants["a"], user_id=a2.id, email=a2.email, session=_login(gateway, a2.email))
    spoke = httpx.post(gateway.url + "/v1/audio/speech", json=SPEECH, headers=_bearer(tenants["a"].key), timeout=10)
    assert spoke.status_code == 200 and spoke.content, spoke.text
    credits = httpx.get(gateway.url + "/v1/credits", headers=_bearer(tenants["a"].key)).json()
    assert credits["reservedMicros"] == 0 and credits["balanceMicros"] < CREDIT_A
    return World(gateway, tenants["a"], tenants["b"], a2_tenant, CREDIT_A - credits["balanceMicros"])


# --- keys ---------------------------------------------------------------------------------


def test_the_key_list_is_the_callers_organization_only(world: World):
    listed = world.get("/v1/keys", world.b.session)
    assert listed.status_code == 200
    b_ids = {row[0] for row in world.db("SELECT id FROM api_keys WHERE org_id = ? AND revoked_at IS NULL", world.b.org_id)}
    assert {k["id"] for k in listed.json()} == b_ids and world.b.key_id in b_ids
    a_ids = {row[0] for row in world.db("SELECT id FROM api_keys WHERE org_id = ?", world.a.org_id)}
    assert a_ids and not a_ids & {k["id"] for k in listed.json()}
    assert world.a.user_id not in {k["createdBy"] for k in listed.json()}


def test_another_organizations_key_cannot_be_revoked_and_is_not_even_there(world: World):
    response = world.delete(f"/v1/keys/{world.a.key_id}", world.b.session)
    assert response.status_code == 404 and response.json()["error"] == "not_found", response.text
    # The same answer as for a key that never existed: nothing tells B that A's key id is real.
    assert world.delete("/v1/keys/key_00000000000000000000000000", world.b.session).json()["error"] == "not_found"
    assert world.get("/v1/credits", world.a.key).status_code == 200  # A's key still works
    assert world.db("SELECT revoked_at FROM api_keys WHERE id = ?", world.a.key_id) == [(None,)]


def test_team_mates_see_each_others_keys_but_only_the_creator_revokes(world: World):
    key, key_id = _mint(world.gateway, world.a.session, "a1's doomed key")
    listed = world.get("/v1/keys", world.a2.session).json()
    assert {key_id, world.a.key_id} <= {k["id"] for k in listed}  # TEAM scope: the org's keys
    assert next(k for k in listed if k["id"] == key_id)["createdBy"] == world.a.user_id

    forbidden = world.delete(f"/v1/keys/{key_id}", world.a2.session)
    assert forbidden.status_code == 403 and forbidden.json()["error"] == "forbidden", forbidden.text
    assert world.get("/v1/credits", key).status_code == 200  # used just now: this replica has it cached

    revoked = world.delete(f"/v1/keys/{key_id}", world.a.session)
    assert revoked.status_code == 200 and revoked.json() == {"id": key_id, "revoked": True}
    # The revoking replica forgets the key at once, cache or not (others: within key_cache_ttl_s).
    assert world.get("/v1/credits", key).status_code == 401
    assert key_id not in {k["id"] for k in world.get("/v1/keys", world.a2.session).json()}
    again = world.delete(f"/v1/keys/{key_id}", world.a.session)
    assert again.status_code == 404 and again.json()["error"] == "not_found"


def test_an_api_key_is_not_a_session(world: World):
    pending = world.post("/v1/auth/device-code", None).json()
    for response in (
        world.post("/v1/keys", world.a.key, {"name": "minted by a key"}),
        world.get("/v1/keys", world.a.key),
        world.delete(f"/v1/keys/{world.a.key_id}", world.a.key),
        world.post("/v1/auth/device/approve", world.a.key, {"user_code": pending["user_code"]}),
        world.post("/v1/auth/logout", world.a.key),
    ):
        assert response.status_code == 401 and response.json()["error"] == "unauthorized", (response.request.url, response.text)
    assert world.get("/v1/credits", world.a.key).status_code == 200  # and survived all that
    # The code is still pending: the key approved nothing.
    poll = world.post("/v1/auth/poll", None, {"device_code": pending["device_code"]})
    assert poll.status_code == 400 and poll.json()["error"] == "authorization_pending"


def test_a_session_is_not_an_api_key(world: World):
    # A session may read its own organization's wallet (`voxrouter billing balance`), never speak.
    for path in ("/v1/credits", "/v1/credits/activity"):
        assert world.get(path, world.a.session).status_code == 200
    assert world.get("/v1/credits", world.a.session).json() == world.get("/v1/credits", world.a.key).json()
    speech = world.post("/v1/audio/speech", world.a.session, SPEECH)
    assert speech.status_code == 401 and speech.json()["error"] == "unauthorized"


def test_the_secret_is_shown_once_and_stored_only_as_its_hash(world: World):
    created = world.post("/v1/keys", world.b.session, {"name": "hash me"})
    assert created.status_code == 201
    secret, key_id = created.json()["secret"], created.json()["key"]["id"]
    assert secret.startswith("pk_") and created.json()["key"]["keySuffix"] == secret[-4:]
    listed = world.get("/v1/keys", world.b.session)
    assert secret not in listed.text and secret[3:-4] not in listed.text
    (row,) = world.db("SELECT * FROM api_keys WHERE id = ?", key_id)
    assert not any(secret[3:-4] in str(value) for value in row), row  # not the secret, nor its body
    assert world.db("SELECT key_hash FROM api_keys WHERE id = ?", key_id) == [(hashlib.sha256(secret.encode()).hexdigest(),)]
    assert world.get("/v1/credits", secret).status_code == 200


def test_last_used_shows_at_once_without_a_write_per_request(world: World):
    key, key_id = _mint(world.gateway, world.b.session, "last used")

    def listed() -> dict:
        return next(k for k in world.get("/v1/keys", world.b.session).json() if k["id"] == key_id)

    assert listed()["lastUsedAt"] is None
    assert world.get("/v1/credits", key).status_code == 200
    used = listed()["lastUsedAt"]
    assert used is not None and used <= iso(utcnow())
    # The list merged this replica's pending use; the row is written in batches (every
    # last_used_flush_s = 30 s), so it is still empty a moment after the request.
    assert world.gateway.settings.load_config().auth.last_used_flush_s >= 30
    assert world.db("SELECT last_used_at FROM api_keys WHERE id = ?", key_id) == [(None,)]


# --- money and usage ----------------------------------------------------------------------


def test_credits_and_activity_are_the_callers_own(world: World):
    assert world.get("/v1/credits", world.b.key).json() == {"balanceMicros": CREDIT_B, "reservedMicros": 0}
    assert world.get("/v1/credits", world.a.key).json() == {"balanceMicros": CREDIT_A - world.a_cost, "reservedMicros": 0}
    b_activity = world.get("/v1/credits/activity", world.b.key, limit=100).json()
    assert [(r["kind"], r["microsDelta"], r["microsBalanceAfter"]) for r in b_activity] == [("topup", CREDIT_B, CREDIT_B)]
    a_activity = world.get("/v1/credits/activity", world.a.key, limit=100).json()
    assert {r["kind"] for r in a_activity} > {"topup"}  # A's speech left reserve/commit rows
    assert sum(r["microsDelta"] for r in a_activity if r["kind"] != "reserve") == CREDIT_A - world.a_cost


@pytest.mark.parametrize("credential", ["key", "session"])
def test_usage_is_the_callers_own(world: World, credential: str):
    b_usage = world.get("/v1/usage", getattr(world.b, credential), limit=1000, days=365).json()
    assert b_usage == {"totals": {"requests": 0, "costMicros": 0, "errorCount": 0}, "byProvider": [], "byErrorCode": [], "recent": []}
    a_usage = world.get("/v1/usage", getattr(world.a, credential), limit=1000, days=365).json()
    assert a_usage["totals"] == {"requests": 1, "costMicros": world.a_cost, "errorCount": 0}
    assert a_usage["byProvider"] == [{"provider": "openai", "requests": 1, "costMicros": world.a_cost}]
    assert [(r["model"], r["status"], r["costMicros"]) for r in a_usage["recent"]] == [("openai/tts-1", 200, world.a_cost)]
    # A's team mate sees the organization's usage too.
    assert world.get("/v1/usage", world.a2.session, limit=1000, days=365).json() == a_usage


# --- identity -----------------------------------------------------------------------------


def test_whoami_is_the_caller(world: World):
    me = world.get("/v1/auth/whoami", world.b.session).json()
    assert (me["user_id"], me["org_id"], me["email"], me["auth"]) == (world.b.user_id, world.b.org_id, world.b.email, "session")
    by_key = world.get("/v1/auth/whoami", world.b.key).json()
    assert (by_key["org_id"], by_key["user_id"], by_key["auth"]) == (world.b.org_id, world.b.user_id, "api_key")
    mate = world.get("/v1/auth/whoami", world.a2.session).json()
    assert (mate["user_id"], mate["org_id"]) == (world.a2.user_id, world.a.org_id)


def test_a_device_code_approved_by_b_logs_in_b(world: World):
    pending = world.post("/v1/auth/device-code", None).json()
    approved = world.post("/v1/auth/device/approve", world.b.session, {"user_code": pending["user_code"]})
    assert approved.status_code == 200 and approved.json() == {"user_code": pending["user_code"], "state": "approved"}
    # Decided once: A cannot re-approve it for itself.
    assert world.post("/v1/auth/device/approve", world.a.session, {"user_code": pending["user_code"]}).status_code == 404
    polled = world.post("/v1/auth/poll", None, {"device_code": pending["device_code"]})
    assert polled.status_code == 200 and polled.json()["user_id"] == world.b.user_id
    session = polled.json()["session_token"]
    me = world.get("/v1/auth/whoami", session).json()
    assert (me["user_id"], me["org_id"]) == (world.b.user_id, world.b.org_id)
    assert {k["id"] for k in world.get("/v1/keys", session).json()}.isdisjoint(
        {row[0] for row in world.db("SELECT id FROM api_keys WHERE org_id = ?", world.a.org_id)}
    )


# --- dead and fake credentials ------------------------------------------------------------


def test_a_logged_out_session_is_refused_at_once(world: World):
    session = _login(world.gateway, world.b.email)
    assert world.get("/v1/keys", session).status_code == 200  # cached on this replica now
    out = world.post("/v1/auth/logout", session)
    assert out.status_code == 200 and out.json() == {"revoked": True}
    for response in (world.get("/v1/keys", session), world.get("/v1/auth/whoami", session), world.get("/v1/usage", session)):
        assert response.status_code == 401 and response.json()["error"] == "unauthorized", response.text
    assert world.post("/v1/auth/logout", session).json() == {"revoked": False}  # idempotent
    assert world.get("/v1/keys", world.b.session).status_code == 200  # B's other session lives on


async def _session_row(url: str, user_id: str, expires_at: str) -> str:
    token = new_secret(SESSION_PREFIX)
    store = await open_store(url)
    try:
        await store.create_session(user_id, token.hash, "cli", expires_at)
    finally:
        await store.close()
    return token.secret


def test_an_expired_session_is_refused(world: World):
    url = world.gateway.settings.database_url
    expired = asyncio.run(_session_row(url, world.b.user_id, iso(utcnow() - dt.timedelta(seconds=1))))
    response = world.get("/v1/keys", expired)
    assert response.status_code == 401 and "expired" in response.json()["details"], response.text
    fresh = asyncio.run(_session_row(url, world.b.user_id, iso(utcnow() + dt.timedelta(hours=1))))
    assert world.get("/v1/keys", fresh).status_code == 200  # the same row shape, alive: accepted


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer vr_session_",
        "Bearer vr_session_garbage",
        "Bearer pk_garbage",
        "Bearer key_00000000000000000000000000",
        "bearer vr_session_" + "A" * 43,
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/keys"),
        ("POST", "/v1/keys"),
        ("DELETE", "/v1/keys/key_x"),
        ("GET", "/v1/auth/whoami"),
        ("GET", "/v1/usage"),
        ("POST", "/v1/auth/device/approve"),
        ("GET", "/v1/credits"),
    ],
)
def test_garbage_tokens_are_refused(world: World, method: str, path: str, authorization: str | None):
    headers = {} if authorization is None else {"Authorization": authorization}
    body = {"name": "x"} if path == "/v1/keys" else {"user_code": "BCDF-GHJK"} if path.endswith("approve") else None
    response = httpx.request(method, world.gateway.url + path, headers=headers, json=body, timeout=10)
    assert response.status_code == 401 and response.json()["error"] == "unauthorized", response.text
