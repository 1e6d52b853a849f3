"""Storage backends behind one interface, chosen by `VOXROUTER_DATABASE_URL`."""

from __future__ import annotations

from router.store.base import Store


async def open_store(url: str) -> Store:
    if url.startswith("sqlite:"):
        from router.store.sqlite import SQLiteStore

        store: Store = SQLiteStore(url)
    else:
        scheme = url.split(":", 1)[0]
        raise ValueError(f"unsupported database URL scheme {scheme!r}: use sqlite:///path")
    await store.open()
    return store
