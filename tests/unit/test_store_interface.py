"""The store's interface, one protocol per domain, and the SQL modules that implement it:
every method a protocol names exists on its SQL module and on both backends, with the same
parameters, so a method cannot go missing or drift when the domains are edited apart."""

from __future__ import annotations

import inspect

import pytest

from voxrouter.router.store.accounts import AccountStore
from voxrouter.router.store.api_keys import ApiKeyStore
from voxrouter.router.store.base import Store
from voxrouter.router.store.billing import BillingStore
from voxrouter.router.store.postgres import PostgresStore
from voxrouter.router.store.sql import SQLStore
from voxrouter.router.store.sql.accounts import SQLAccounts
from voxrouter.router.store.sql.api_keys import SQLApiKeys
from voxrouter.router.store.sql.billing import SQLBilling
from voxrouter.router.store.sql.usage import SQLUsage
from voxrouter.router.store.sql.wallet import SQLWallet
from voxrouter.router.store.sqlite import SQLiteStore
from voxrouter.router.store.usage import UsageStore
from voxrouter.router.store.wallet import WalletStore

DOMAINS = [
    (AccountStore, SQLAccounts),
    (ApiKeyStore, SQLApiKeys),
    (WalletStore, SQLWallet),
    (UsageStore, SQLUsage),
    (BillingStore, SQLBilling),
]


def _methods(protocol: type) -> list[str]:
    return sorted(name for name in dir(protocol) if not name.startswith("_"))


def _same_signature(protocol: type, implementation: type, name: str) -> None:
    assert hasattr(implementation, name), f"{implementation.__name__} lacks {protocol.__name__}.{name}"
    wanted = inspect.signature(getattr(protocol, name))
    found = inspect.signature(getattr(implementation, name))
    assert str(found) == str(wanted), f"{implementation.__name__}.{name}{found} differs from {protocol.__name__}.{name}{wanted}"


@pytest.mark.parametrize(("protocol", "implementation"), DOMAINS, ids=lambda c: c.__name__)
def test_each_domain_module_implements_its_protocol(protocol: type, implementation: type) -> None:
    assert _methods(protocol), f"{protocol.__name__} names no methods"
    for name in _methods(protocol):
        _same_signature(protocol, implementation, name)


def test_the_store_is_the_domains_together_and_nothing_is_left_out() -> None:
    from_domains = {name for protocol, _ in DOMAINS for name in _methods(protocol)}
    lifecycle = {"open", "close", "ping", "missing_migrations"}
    assert set(_methods(Store)) == from_domains | lifecycle
    assert all(issubclass(SQLStore, implementation) for _, implementation in DOMAINS)


@pytest.mark.parametrize("backend", [SQLiteStore, PostgresStore], ids=lambda c: c.__name__)
def test_both_backends_implement_the_whole_store(backend: type) -> None:
    assert not inspect.isabstract(backend), f"{backend.__name__} leaves {sorted(backend.__abstractmethods__)} abstract"
    for name in _methods(Store):
        _same_signature(Store, backend, name)
