"""What an emulator does with the next requests: timing and injected faults, plus a request log."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import random
from typing import Any, AsyncIterator, Callable

import anyio
from starlette.requests import Request


@dataclasses.dataclass
class Behaviour:
    first_byte_delay_s: float = 0.05
    audio_duration_s: float = 1.0  # length of the clip produced
    stream_time_s: float = 0.2  # wall time spent streaming it after the first byte
    chunks: int = 10
    fail_status: int | None = None  # answer every request with this HTTP error
    retry_after_s: int | None = None  # sent with a 429
    reset_after_chunks: int | None = None  # drop the connection after N chunks
    hang: bool = False  # never answer


@dataclasses.dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    body: Any


# Faults that can be injected into single synthesis requests.
FAULTS: dict[str, dict[str, Any]] = {
    "500": {"fail_status": 500},
    "503": {"fail_status": 503},
    "429": {"fail_status": 429, "retry_after_s": 1},
    "reset": {"reset_after_chunks": 2},  # connection dropped after audio started
    "hang": {"hang": True},  # no answer until the client gives up
    "slow": {"first_byte_delay_s": 0.4},  # slow first byte, still within the gateway's timeout
}


@dataclasses.dataclass
class EmulatorState:
    api_key: str
    behaviour: Behaviour = dataclasses.field(default_factory=Behaviour)
    requests: list[Recorded] = dataclasses.field(default_factory=list)
    cancelled: int = 0  # streams whose client went away before the end
    completed: int = 0
    # Per-request faults: `script` is consumed first (one entry per synthesis request, None =
    # behave normally), then each request draws a fault with probability `fault_rate`.
    script: list[str | None] = dataclasses.field(default_factory=list)
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = tuple(FAULTS)
    rng: random.Random = dataclasses.field(default_factory=lambda: random.Random(0))
    injected: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    synthesis_requests: int = 0

    def reset(self, **changes: Any) -> None:
        self.behaviour = Behaviour(**changes)
        self.requests.clear()
        self.cancelled = 0
        self.completed = 0
        self.script = []
        self.fault_rate = 0.0
        self.fault_kinds = tuple(FAULTS)
        self.rng = random.Random(0)
        self.injected.clear()
        self.synthesis_requests = 0

    def next_behaviour(self) -> Behaviour:
        """The behaviour for the synthesis request now arriving, with its fault if one is due."""
        self.synthesis_requests += 1
        if self.script:
            fault = self.script.pop(0)
        elif self.fault_rate and self.rng.random() < self.fault_rate:
            fault = self.rng.choice(self.fault_kinds)
        else:
            fault = None
        if fault is None:
            return self.behaviour
        self.injected[fault] += 1
        return dataclasses.replace(self.behaviour, **FAULTS[fault])


async def record(request: Request, state: EmulatorState) -> Any:
    """Log the request (with its JSON body, or None when there is none or it is not JSON)."""
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    state.requests.append(Recorded(request.method, request.url.path, dict(request.headers), dict(request.query_params), body))
    return body


def retry_after_headers(behaviour: Behaviour) -> dict[str, str]:
    return {"retry-after": str(behaviour.retry_after_s)} if behaviour.retry_after_s is not None else {}


class ConnectionReset(Exception):
    """Raised inside a streaming body: uvicorn drops the connection without a final chunk."""


async def paced(
    state: EmulatorState, pieces: list[bytes], wrap: Callable[[bytes], bytes] = lambda b: b, behaviour: Behaviour | None = None
) -> AsyncIterator[bytes]:
    b = behaviour or state.behaviour
    gap = b.stream_time_s / max(1, len(pieces) - 1)
    finished = False
    try:
        for index, piece in enumerate(pieces):
            if b.reset_after_chunks is not None and index >= b.reset_after_chunks:
                raise ConnectionReset()
            if index:
                await asyncio.sleep(gap)
            yield wrap(piece)
        finished = True
    finally:
        if finished:
            state.completed += 1
        else:
            state.cancelled += 1


async def before_first_byte(request: Request, state: EmulatorState, behaviour: Behaviour | None = None) -> bool:
    """Wait as configured before answering; False if the client went away meanwhile.

    A `hang` sleeps for an hour; it is abandoned once the client has disconnected, so
    uvicorn's shutdown does not wait for it.
    """

    async def watch(scope: anyio.CancelScope) -> None:
        while not await request.is_disconnected():
            await anyio.sleep(0.02)
        scope.cancel()

    b = behaviour or state.behaviour
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch, tg.cancel_scope)
        if b.hang:
            await anyio.sleep(3600)
        await anyio.sleep(b.first_byte_delay_s)
        tg.cancel_scope.cancel()
    return not await request.is_disconnected()
