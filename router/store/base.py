"""The store: the whole interface the gateway keeps its data through, one protocol per domain
(accounts.py, api_keys.py, wallet.py, usage.py, billing.py, each beside its records), and the
time format every table shares. Callers import the records from here or from their domain's module."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from voxrouter.router.store.accounts import (
    AccountStore,
    DevicePoll,
    DevicePollOutcome,
    OrgRecord,
    SessionRecord,
    UserRecord,
)
from voxrouter.router.store.api_keys import ApiKeyRecord, ApiKeyStore, NewApiKeyRecord, TooManyKeys
from voxrouter.router.store.billing import BillingStore, ReversalResult, StripeCredit, StripeReversal
from voxrouter.router.store.usage import UsageEnd, UsageRow, UsageStart, UsageStore, UsageSummary
from voxrouter.router.store.wallet import LedgerRow, ReserveOutcome, SpendLimits, WalletSnapshot, WalletStore

__all__ = [
    "AccountStore",
    "ApiKeyRecord",
    "ApiKeyStore",
    "BillingStore",
    "Conflict",
    "DevicePoll",
    "DevicePollOutcome",
    "LedgerRow",
    "NewApiKeyRecord",
    "OrgRecord",
    "ReserveOutcome",
    "ReversalResult",
    "SessionRecord",
    "SpendLimits",
    "Store",
    "StripeCredit",
    "StripeReversal",
    "TooManyKeys",
    "UsageEnd",
    "UsageRow",
    "UsageStart",
    "UsageStore",
    "UsageSummary",
    "UserRecord",
    "WalletSnapshot",
    "WalletStore",
    "iso",
    "utcnow",
    "utcnow_iso",
]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(moment: dt.datetime) -> str:
    """UTC, millisecond ISO 8601 with a Z: sorts as text, so both databases compare it as text."""
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utcnow_iso() -> str:
    return iso(utcnow())


class Conflict(Exception):
    """A unique value (organization name, email) is already taken."""


class Store(AccountStore, ApiKeyStore, WalletStore, UsageStore, BillingStore, Protocol):
    async def open(self) -> None:
        """Connect, and apply the migrations this database lacks."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    async def missing_migrations(self) -> list[int]:
        """Migration versions not applied to this database (empty when up to date)."""
        ...
