"""What the gateway has seen of each provider, for `GET /v1/status`.

A provider is `unavailable` when it cannot be called (no key), `degraded` after
consecutive upstream failures (the client's own 4xx never count), else `available`.
"""

from __future__ import annotations

import dataclasses

from providers.base import ErrorKind, Provider

DEGRADED_AFTER = 3


@dataclasses.dataclass
class _Record:
    consecutive_failures: int = 0
    last_error: str | None = None


class HealthBoard:
    def __init__(self) -> None:
        self._records: dict[str, _Record] = {}

    def success(self, provider_id: str) -> None:
        self._records[provider_id] = _Record()

    def failure(self, provider_id: str, kind: ErrorKind, message: str) -> None:
        if kind in (ErrorKind.bad_request, ErrorKind.overloaded):  # the client's fault, or our own queue
            return
        record = self._records.setdefault(provider_id, _Record())
        record.consecutive_failures += 1
        record.last_error = message

    def state(self, provider: Provider) -> tuple[str, str | None]:
        if not provider.configured:
            return "unavailable", "missing_api_key"
        record = self._records.get(provider.id)
        if record and record.consecutive_failures >= DEGRADED_AFTER:
            return "degraded", None
        return "available", None
