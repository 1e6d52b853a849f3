"""The store's schema migrations (router/store/migrations), one set per SQL dialect."""

from __future__ import annotations

from voxrouter.router.store.migrations import migrations, statements


def test_both_dialects_have_the_same_migrations():
    sqlite, postgres = migrations("sqlite"), migrations("postgres")
    assert [v for v, _ in sqlite] == [v for v, _ in postgres]

    def shape(sql: str) -> list[str]:
        # Statement by statement, the same tables and columns; only the types may differ.
        return [" ".join(s.replace("BIGINT", "INTEGER").split()[:3]) for s in statements(sql)]

    for (_, a), (_, b) in zip(sqlite, postgres):
        assert shape(a) == shape(b)
