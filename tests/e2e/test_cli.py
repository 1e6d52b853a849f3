"""`voxrouter admin` works offline against either database and stores only hashes of secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx

from tests.conftest import emulated_config, running_gateway
from tests.databases import query
from voxrouter.router.accounts.auth import hash_secret


def _voxrouter(*args: str, db: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VOXROUTER_DATABASE_URL": db, **env}
    return subprocess.run(
        [sys.executable, "-m", "voxrouter.cli", *args], env=env, capture_output=True, text=True, timeout=60, input=stdin
    )


def test_create_key_prints_only_the_secret_and_stores_its_hash(database_url):
    db = database_url
    result = _voxrouter("admin", "create-key", "--org", "acme", "--name", "dev", "--credit-usd", "5", db=db)
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip()
    assert secret.startswith("pk_") and "\n" not in secret and len(secret) > 40
    assert secret not in result.stderr
    ((stored,),) = query(db, "SELECT key_hash FROM api_keys")
    ((balance,),) = query(db, "SELECT balance_micros FROM wallets")
    ledger = query(db, "SELECT kind, micros_delta, source FROM ledger")
    assert stored == hash_secret(secret)
    assert balance == 5_000_000 and ledger == [("topup", 5_000_000, "admin")]
    if db.startswith("sqlite:///"):
        with open(db.removeprefix("sqlite:///"), "rb") as fh:
            assert secret.encode() not in fh.read()

    again = _voxrouter("admin", "create-key", "--org", "acme", "--name", "ci", db=db)
    assert again.returncode == 0 and again.stdout.strip() != secret
    assert query(db, "SELECT COUNT(*) FROM orgs") == [(1,)]
    assert query(db, "SELECT COUNT(*) FROM api_keys") == [(2,)]


def test_bad_credit_amount_is_a_usage_error(tmp_path):
    db = f"sqlite:///{tmp_path / 'x.db'}"
    result = _voxrouter("admin", "create-key", "--org", "a", "--name", "b", "--credit-usd", "-1", db=db)
    assert result.returncode == 2 and "non-negative" in result.stderr
    result = _voxrouter("admin", "create-key", "--org", "a", "--name", "b", "--credit-usd", "lots", db=db)
    assert result.returncode == 2


def test_grant_and_revoke_credit_with_a_reason(database_url):
    db = database_url
    unknown = _voxrouter("admin", "grant-credit", "--org", "acme", "--usd", "2.5", "--reason", "promo", db=db)
    assert unknown.returncode == 1 and "no organization named 'acme'" in unknown.stderr
    assert _voxrouter("admin", "create-org", "acme", db=db).stdout.startswith("org_")
    assert _voxrouter("admin", "grant-credit", "--org", "acme", "--usd", "2.5", "--reason", "promo", db=db).returncode == 0
    assert _voxrouter("admin", "revoke-credit", "--org", "acme", "--usd", "1", "--reason", "chargeback", db=db).returncode == 0
    too_much = _voxrouter("admin", "revoke-credit", "--org", "acme", "--usd", "2", "--reason", "oops", db=db)
    assert too_much.returncode == 1 and "more than the available balance" in too_much.stderr
    assert _voxrouter("admin", "grant-credit", "--org", "acme", "--usd", "1", db=db).returncode == 2  # no reason
    balance = _voxrouter("admin", "balance", "--org", "acme", db=db)
    assert json.loads(balance.stdout) == {"balanceMicros": 1_500_000, "reservedMicros": 0}
    rows = query(db, "SELECT kind, micros_delta, source, note FROM ledger ORDER BY id")
    assert rows == [("topup", 2_500_000, "admin", "promo"), ("topup", -1_000_000, "admin", "chargeback")]


def test_create_user_then_log_in_and_own_a_key(database_url, emulators, tmp_path):
    db = database_url
    short = _voxrouter("admin", "create-user", "--org", "acme", "--email", "Ops@Acme.test", db=db, VOXROUTER_ADMIN_PASSWORD="short")
    assert short.returncode == 2 and "at least 8" in short.stderr
    made = _voxrouter("admin", "create-user", "--org", "acme", "--email", "Ops@Acme.test", db=db, stdin="a long password\na long password\n")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().startswith("usr_")
    dup = _voxrouter("admin", "create-user", "--org", "acme", "--email", "ops@acme.test", db=db, VOXROUTER_ADMIN_PASSWORD="another one!")
    assert dup.returncode == 1 and "Error" in dup.stderr
    stranger = _voxrouter("admin", "create-key", "--org", "other", "--name", "k", "--user", "ops@acme.test", db=db)
    assert stranger.returncode == 1 and "no user" in stranger.stderr
    key = _voxrouter("admin", "create-key", "--org", "acme", "--name", "k", "--user", "ops@acme.test", "--max-concurrency", "2", db=db)
    assert key.returncode == 0, key.stderr
    (stored_hash,) = query(db, "SELECT password_hash FROM users WHERE email = ?", "ops@acme.test")[0]
    assert stored_hash.startswith("scrypt$") and "a long password" not in stored_hash

    with running_gateway(tmp_path, emulated_config(emulators), db) as gw:
        login = httpx.post(gw.url + "/v1/auth/login", json={"email": "ops@acme.test", "password": "a long password"})
        assert login.status_code == 200, login.text
        keys = httpx.get(gw.url + "/v1/keys", headers={"Authorization": f"Bearer {login.json()['session_token']}"}).json()
        assert [(k["name"], k["maxConcurrency"], k["createdBy"]) for k in keys] == [("k", 2, made.stdout.strip())]
