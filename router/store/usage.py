"""Usage rows, one per request: their records and the store's interface. A reserved request's
row is written by the wallet's reserve and settle (router/store/wallet.py), in their transactions."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Protocol


@dataclasses.dataclass(frozen=True)
class UsageStart:
    """The part of a usage row known when a request is admitted."""

    request_id: str  # the request's X-Request-Id: a client may send the same one twice
    org_id: str
    key_id: str | None
    provider: str | None
    model: str | None
    characters: int
    kind: str = "speech"  # or "transcription"
    audio_ms: int = 0  # a transcription's measured duration, what it is priced on
    row_id: str = dataclasses.field(default_factory=lambda: f"use_{uuid.uuid4().hex}")  # the row's own key


@dataclasses.dataclass(frozen=True)
class UsageEnd:
    status: int
    error_code: str | None
    cost_micros: int
    latency_ms: int
    attempts: str = "[]"  # JSON list of {provider, model, voice, outcome, reason}
    provider: str | None = None  # the provider that served, when a fallback did (None: unchanged)
    model: str | None = None


@dataclasses.dataclass(frozen=True)
class UsageRow:
    created_at: str
    status: int | None
    provider: str | None
    model: str | None
    cost_micros: int
    error_code: str | None
    request_id: str | None = None  # None on rows written before request ids were kept
    kind: str = "speech"  # "speech" or "transcription"


@dataclasses.dataclass(frozen=True)
class UsageSummary:
    requests: int
    cost_micros: int
    error_count: int
    by_provider: list[tuple[str, int, int]]  # provider, requests, cost
    by_error_code: list[tuple[str, int]]
    recent: list[UsageRow]


class UsageStore(Protocol):
    async def record_usage(self, start: UsageStart, end: UsageEnd) -> None:
        """The whole row of a request that held no money."""
        ...

    async def usage_summary(self, org_id: str, since: str, limit: int) -> UsageSummary: ...
