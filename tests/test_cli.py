"""`voxrouter admin create-key` works offline and stores only a hash of the secret."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

from router.auth import hash_secret


def _voxrouter(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VOXROUTER_DATABASE_URL": f"sqlite:///{db}"}
    return subprocess.run([sys.executable, "-m", "router.cli", *args], env=env, capture_output=True, text=True, timeout=60)


def test_create_key_prints_only_the_secret_and_stores_its_hash(tmp_path):
    db = str(tmp_path / "admin.db")
    result = _voxrouter("admin", "create-key", "--org", "acme", "--name", "dev", "--credit-usd", "5", db=db)
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip()
    assert secret.startswith("pk_") and "\n" not in secret and len(secret) > 40
    assert secret not in result.stderr
    with sqlite3.connect(db) as conn:
        (stored,) = conn.execute("SELECT key_hash FROM api_keys").fetchone()
        balance = conn.execute("SELECT balance_micros FROM wallets").fetchone()[0]
        ledger = conn.execute("SELECT kind, micros_delta, source FROM ledger").fetchall()
    assert stored == hash_secret(secret)
    assert balance == 5_000_000 and ledger == [("topup", 5_000_000, "admin")]
    with open(db, "rb") as fh:
        assert secret.encode() not in fh.read()

    again = _voxrouter("admin", "create-key", "--org", "acme", "--name", "ci", db=db)
    assert again.returncode == 0 and again.stdout.strip() != secret
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM orgs").fetchone()[0] == 1
        assert conn.execute("SELECT COUNT(*) FROM api_keys").fetchone()[0] == 2


def test_bad_credit_amount_is_a_usage_error(tmp_path):
    result = _voxrouter("admin", "create-key", "--org", "a", "--name", "b", "--credit-usd", "-1", db=str(tmp_path / "x.db"))
    assert result.returncode == 2 and "non-negative" in result.stderr
    result = _voxrouter("admin", "create-key", "--org", "a", "--name", "b", "--credit-usd", "lots", db=str(tmp_path / "x.db"))
    assert result.returncode == 2


def test_grant_and_revoke_credit_with_a_reason(tmp_path):
    db = str(tmp_path / "g.db")
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
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT kind, micros_delta, source, note FROM ledger ORDER BY id").fetchall()
    assert rows == [("topup", 2_500_000, "admin", "promo"), ("topup", -1_000_000, "admin", "chargeback")]
