"""Where local inference runs: a few worker threads per engine, and the admission gate.

onnxruntime and torch release the GIL while they compute, so threads give real
parallelism without blocking the event loop. Jobs are served earliest deadline first:
a job's deadline is the moment its stream runs out of audio, so a new stream's first
piece (deadline: now) goes ahead of pieces for streams that still have audio buffered.
That keeps first audio fast under load without slowing anyone's real-time playback.

Between tenants (organizations), jobs that are due (their deadline within `DUE_SLACK_S`)
take turns: the due job of the tenant served least recently goes first, then earliest
deadline. So one tenant's many streams falling due at once (say, clients that stopped
reading once their buffers were full) delay another tenant's first piece by one job per
worker, not by all of theirs; a job that is not due yet never goes ahead of a due one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import heapq
import itertools
import threading
import time
from typing import Any, AsyncIterator, Callable, TypeVar

T = TypeVar("T")

DUE_SLACK_S = 0.25


class EngineBusy(Exception):
    """Every stream slot and queue place is taken (or the wait for one ran out)."""

    def __init__(self, message: str, *, retry_after_s: float, queue_full: bool) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.queue_full = queue_full


@dataclasses.dataclass(order=True)
class _Job:
    deadline: float
    seq: int
    tenant: str = dataclasses.field(compare=False)
    fn: Callable[[], Any] = dataclasses.field(compare=False)
    loop: asyncio.AbstractEventLoop = dataclasses.field(compare=False)
    future: asyncio.Future[Any] = dataclasses.field(compare=False)


class WorkerPool:
    """Blocking jobs on `workers` daemon threads: due jobs by tenants in turn, else earliest deadline first."""

    def __init__(self, name: str, workers: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._name = name
        self._workers = max(1, workers)
        self._clock = clock
        self._heap: list[_Job] = []
        self._turns = itertools.count()
        self._served: dict[str, int] = {}  # tenant -> the turn it was last served
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.busy = 0

    @property
    def queued(self) -> int:
        return len(self._heap)

    async def run(self, deadline: float, fn: Callable[..., T], *args: Any, tenant: str = "") -> T:
        """Run fn(*args) on a worker for `tenant`. Cancelling the caller drops the job if it has not started."""
        loop = asyncio.get_running_loop()
        job = _Job(deadline, next(self._seq), tenant, lambda: fn(*args), loop, loop.create_future())
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self._name} pool is closed")
            self._start_threads()
            heapq.heappush(self._heap, job)
            self._cond.notify()
        return await job.future

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify_all()

    def _start_threads(self) -> None:
        while len(self._threads) < self._workers:
            thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._heap and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._next_job()
                if job.future.cancelled():
                    continue
                self.busy += 1
            try:
                result, error = job.fn(), None
            except BaseException as exc:  # handed to the awaiting coroutine
                result, error = None, exc
            finally:
                with self._cond:
                    self.busy -= 1
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
                job.loop.call_soon_threadsafe(_resolve, job.future, result, error)


    def _next_job(self) -> _Job:
        """With the lock held: among the due jobs, the one of the tenant served least recently
        (earliest deadline within a tenant); with none due, the earliest deadline."""
        first = self._heap[0]
        due_by = self._clock() + DUE_SLACK_S
        best = first
        if first.deadline <= due_by:
            for job in self._heap:  # a few dozen at most: one job in flight per stream
                if job.deadline <= due_by and self._rank(job) < self._rank(best):
                    best = job
        if best is first:
            heapq.heappop(self._heap)
        else:
            self._heap.remove(best)
            heapq.heapify(self._heap)
        self._served[best.tenant] = next(self._turns)
        if len(self._served) > 10_000:  # bounded: forget the tenants served longest ago
            self._served = dict(sorted(self._served.items(), key=lambda kv: kv[1])[-1_000:])
        return best

    def _rank(self, job: _Job) -> tuple[int, float, int]:
        return (self._served.get(job.tenant, -1), job.deadline, job.seq)


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class StreamGate:
    """At most `max_streams` streams synthesising at once, `max_queue` more waiting in line,
    and at most `max_per_tenant` of the streams for any one tenant (an organization): a
    tenant whose clients hold their streams open without reading cannot take every slot.
    A freed slot goes to the longest-waiting request whose tenant is under its share."""

    def __init__(self, max_streams: int, max_queue: int, queue_timeout_s: float, max_per_tenant: int | None = None) -> None:
        self.max_streams = max(1, max_streams)
        self.max_queue = max(0, max_queue)
        self.queue_timeout_s = queue_timeout_s
        self.max_per_tenant = max(1, min(max_per_tenant or self.max_streams, self.max_streams))
        self._by_tenant: dict[str, int] = {}
        self._waiters: collections.deque[tuple[str, asyncio.Future[None]]] = collections.deque()
        self.active = 0

    @property
    def waiting(self) -> int:
        return sum(1 for _, future in self._waiters if not future.done())

    def _free_for(self, tenant: str) -> bool:
        return self.active < self.max_streams and self._by_tenant.get(tenant, 0) < self.max_per_tenant

    def _take(self, tenant: str) -> None:
        self.active += 1
        self._by_tenant[tenant] = self._by_tenant.get(tenant, 0) + 1

    def _give_back(self, tenant: str) -> None:
        self.active -= 1
        left = self._by_tenant[tenant] - 1
        if left:
            self._by_tenant[tenant] = left
        else:
            del self._by_tenant[tenant]
        for waiter in list(self._waiters):  # hand the slot on, in arrival order
            other, future = waiter
            if future.done():
                self._waiters.remove(waiter)
            elif self._free_for(other):
                self._waiters.remove(waiter)
                self._take(other)
                future.set_result(None)

    @contextlib.asynccontextmanager
    async def admit(self, tenant: str = "") -> AsyncIterator[None]:
        if self._free_for(tenant):
            self._take(tenant)
        else:
            if self.waiting >= self.max_queue:
                raise EngineBusy(
                    f"all {self.max_streams} streams are busy and {self.waiting} requests are waiting",
                    retry_after_s=1.0,
                    queue_full=True,
                )
            while self._waiters and self._waiters[0][1].done():
                self._waiters.popleft()
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((tenant, future))
            try:
                await asyncio.wait_for(asyncio.shield(future), self.queue_timeout_s)
            except BaseException as exc:
                if future.done() and not future.cancelled():
                    self._give_back(tenant)  # handed a slot just as it gave up: pass it on
                else:
                    future.cancel()
                if isinstance(exc, TimeoutError):
                    raise EngineBusy(
                        f"no stream slot became free within {self.queue_timeout_s:g}s",
                        retry_after_s=max(1.0, self.queue_timeout_s),
                        queue_full=False,
                    ) from None
                raise
        try:
            yield
        finally:
            self._give_back(tenant)
