"""Accounts without a gateway; over the wire they are tests/integration/test_accounts.py."""

from __future__ import annotations

from voxrouter.router.accounts.passwords import hash_password_sync, verify_password_sync


def test_password_hashes_are_salted():
    assert hash_password_sync("same password") != hash_password_sync("same password")
    assert not verify_password_sync("x", "garbage") and not verify_password_sync("x", None)
