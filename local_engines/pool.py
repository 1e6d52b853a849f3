"""Where local inference runs: a few worker threads per engine, and the admission gate.

onnxruntime and torch release the GIL while they compute, so threads give real
parallelism without blocking the event loop. Jobs are served earliest deadline first:
a job's deadline is the moment its stream runs out of audio, so a new stream's first
piece (deadline: now) goes ahead of pieces for streams that still have audio buffered.
That keeps first audio fast under load without slowing anyone's real-time playback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import threading
from typing import Any, AsyncIterator, Callable, TypeVar

T = TypeVar("T")


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
    fn: Callable[[], Any] = dataclasses.field(compare=False)
    loop: asyncio.AbstractEventLoop = dataclasses.field(compare=False)
    future: asyncio.Future[Any] = dataclasses.field(compare=False)


class WorkerPool:
    """Blocking jobs on `workers` daemon threads, earliest deadline first."""

    def __init__(self, name: str, workers: int) -> None:
        self._name = name
        self._workers = max(1, workers)
        self._heap: list[_Job] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.busy = 0

    @property
    def queued(self) -> int:
        return len(self._heap)

    async def run(self, deadline: float, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(*args) on a worker. Cancelling the caller drops the job if it has not started."""
        loop = asyncio.get_running_loop()
        job = _Job(deadline, next(self._seq), lambda: fn(*args), loop, loop.create_future())
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
                job = heapq.heappop(self._heap)
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


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class StreamGate:
    """At most `max_streams` streams synthesising at once, `max_queue` more waiting in line."""

    def __init__(self, max_streams: int, max_queue: int, queue_timeout_s: float) -> None:
        self.max_streams = max(1, max_streams)
        self.max_queue = max(0, max_queue)
        self.queue_timeout_s = queue_timeout_s
        self._slots = asyncio.Semaphore(self.max_streams)
        self.active = 0
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        if self._slots.locked() and self.waiting >= self.max_queue:
            raise EngineBusy(
                f"all {self.max_streams} streams are busy and {self.waiting} requests are waiting",
                retry_after_s=1.0,
                queue_full=True,
            )
        self.waiting += 1
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise EngineBusy(
                f"no stream slot became free within {self.queue_timeout_s:g}s",
                retry_after_s=max(1.0, self.queue_timeout_s),
                queue_full=False,
            ) from None
        finally:
            self.waiting -= 1
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
            self._slots.release()
