"""Storage backends behind one interface, chosen by `VOXROUTER_DATABASE_URL`."""

from __future__ import annotations

from voxrouter.router.store.base import Store


async def open_store(url: str) -> Store:
    """`sqlite:///path.db` (the embedded default) or `postgresql://user@host:5432/db`."""
    store: Store
    if url.startswith("sqlite:"):
        from voxrouter.router.store.sqlite import SQLiteStore

        store = SQLiteStore(url)
    elif url.startswith(("postgresql:", "postgres:")):
        from voxrouter.router.store.postgres import PostgresStore

        store = PostgresStore(url)
    else:
        scheme = url.split(":", 1)[0]
        raise ValueError(f"unsupported database URL scheme {scheme!r}: use sqlite:///path or postgresql://host/db")
    await store.open()
    return store
