"""Per-key concurrency slots (`maxConcurrency`), in this process's memory."""

from __future__ import annotations

import contextlib
from typing import Iterator

from router.errors import ApiError


class ConcurrencySlots:
    def __init__(self) -> None:
        self._in_use: dict[str, int] = {}

    def in_use(self, key_id: str) -> int:
        return self._in_use.get(key_id, 0)

    def acquire(self, key_id: str, limit: int | None) -> "Slot":
        """Take a slot or raise 429 `concurrency_limited`; release it exactly once."""
        count = self._in_use.get(key_id, 0)
        if limit is not None and count >= limit:
            raise ApiError(
                429,
                "concurrency_limited",
                f"this key allows {limit} concurrent requests; wait for one to finish",
                headers={"Retry-After": "1"},
            )
        self._in_use[key_id] = count + 1
        return Slot(self, key_id)

    def _release(self, key_id: str) -> None:
        left = self._in_use.get(key_id, 0) - 1
        if left > 0:
            self._in_use[key_id] = left
        else:
            self._in_use.pop(key_id, None)


class Slot:
    def __init__(self, slots: ConcurrencySlots, key_id: str) -> None:
        self._slots = slots
        self._key_id = key_id
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._slots._release(self._key_id)

    @contextlib.contextmanager
    def released_on_error(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.release()
            raise
