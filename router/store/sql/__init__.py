"""The store's logic, written once for both databases, one module per domain.

Each operation is an `async def` over a `Tx`, run whole inside one transaction by the
backend: PostgreSQL awaits it on a pooled asyncpg connection; SQLite drives it to
completion on its connection thread, where the awaits never suspend (see sqlite.py).
The SQL is the common subset of both dialects with `?` placeholders.

Lock order, to keep PostgreSQL free of deadlocks: stripe_payment_locks (one payment's, whose
stripe_payments and stripe_reversals rows only its holder touches), reservations, wallets, key_spend.
An orgs row is locked only by a capped key mint, which takes no other lock before it.
"""

from __future__ import annotations

from voxrouter.router.store.sql.accounts import SQLAccounts
from voxrouter.router.store.sql.api_keys import SQLApiKeys
from voxrouter.router.store.sql.backend import Row, SQLBackend, Tx
from voxrouter.router.store.sql.billing import SQLBilling
from voxrouter.router.store.sql.usage import SQLUsage
from voxrouter.router.store.sql.wallet import SQLWallet

__all__ = ["Row", "SQLBackend", "SQLStore", "Tx"]


class SQLStore(SQLAccounts, SQLApiKeys, SQLWallet, SQLUsage, SQLBilling):
    """The whole `Store` interface; a backend subclasses it with `SQLBackend`'s primitives."""
