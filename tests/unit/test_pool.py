"""The engines' worker pool (earliest deadline first) and admission gate."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from voxrouter.local_engines.pool import EngineBusy, StreamGate, WorkerPool


def test_jobs_run_earliest_deadline_first_and_cancelled_ones_never_run():
    async def main() -> list[str]:
        pool = WorkerPool("test", workers=1)
        ran: list[str] = []
        release = threading.Event()

        def job(name: str) -> str:
            if name == "blocker":
                release.wait(5)
            ran.append(name)
            return name

        now = time.monotonic()
        blocker = asyncio.ensure_future(pool.run(now, job, "blocker"))
        await asyncio.sleep(0.05)  # the worker is busy with it; the rest queue up
        late = asyncio.ensure_future(pool.run(now + 2.0, job, "late"))
        dropped = asyncio.ensure_future(pool.run(now + 0.5, job, "dropped"))
        urgent = asyncio.ensure_future(pool.run(now + 0.1, job, "urgent"))
        await asyncio.sleep(0.01)
        dropped.cancel()
        release.set()
        assert await urgent == "urgent" and await late == "late" and await blocker == "blocker"
        pool.close()
        return ran

    assert asyncio.run(main()) == ["blocker", "urgent", "late"]


def test_an_exception_reaches_the_caller():
    async def main() -> None:
        pool = WorkerPool("test", workers=2)

        def boom() -> None:
            raise ValueError("engine failed")

        with pytest.raises(ValueError, match="engine failed"):
            await pool.run(0.0, boom)
        assert await pool.run(0.0, lambda: 42) == 42  # the worker survived
        pool.close()

    asyncio.run(main())


def test_gate_admits_queues_then_refuses_and_frees_slots():
    async def main() -> None:
        gate = StreamGate(max_streams=1, max_queue=1, queue_timeout_s=0.2)
        holder_in = asyncio.Event()
        holder_out = asyncio.Event()

        async def hold() -> None:
            async with gate.admit():
                holder_in.set()
                await holder_out.wait()

        holder = asyncio.create_task(hold())
        await holder_in.wait()

        async def wait_in_line() -> str:
            try:
                async with gate.admit():
                    return "admitted"
            except EngineBusy as exc:
                return f"busy queue_full={exc.queue_full}"

        queued = asyncio.create_task(wait_in_line())
        await asyncio.sleep(0.01)
        assert gate.waiting == 1
        assert await wait_in_line() == "busy queue_full=True"  # the one queue place is taken
        assert await queued == "busy queue_full=False"  # waited past queue_timeout_s
        holder_out.set()
        await holder
        assert gate.active == 0 and gate.waiting == 0
        assert await wait_in_line() == "admitted"

    asyncio.run(main())


def test_a_cancelled_waiter_leaves_no_trace():
    async def main() -> None:
        gate = StreamGate(max_streams=1, max_queue=4, queue_timeout_s=5)
        async with gate.admit():
            waiter = asyncio.create_task(gate.admit().__aenter__())
            await asyncio.sleep(0.01)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert gate.waiting == 0
        async with gate.admit():  # the slot came back despite the cancelled waiter
            assert gate.active == 1

    asyncio.run(main())


def test_one_tenant_holds_at_most_its_share_and_the_next_slot_goes_to_another():
    """8 never-reading clients of one organization cannot take every slot from the others."""

    async def main() -> None:
        gate = StreamGate(max_streams=4, max_queue=8, queue_timeout_s=5, max_per_tenant=2)
        release = asyncio.Event()
        admitted: list[str] = []

        async def stream(tenant: str) -> None:
            async with gate.admit(tenant):
                admitted.append(tenant)
                await release.wait()

        hostile = [asyncio.create_task(stream("hostile")) for _ in range(8)]
        await asyncio.sleep(0.01)
        assert admitted == ["hostile", "hostile"] and gate.active == 2 and gate.waiting == 6
        others = [asyncio.create_task(stream("other")) for _ in range(2)]
        await asyncio.sleep(0.01)
        assert admitted.count("other") == 2 and gate.active == 4  # served at once, ahead of the hostile queue
        release.set()
        await asyncio.gather(*hostile, *others)
        assert admitted.count("hostile") == 8 and gate.active == 0 and gate.waiting == 0

    asyncio.run(main())


def test_a_freed_slot_goes_to_the_longest_waiting_eligible_tenant():
    async def main() -> None:
        gate = StreamGate(max_streams=2, max_queue=8, queue_timeout_s=5, max_per_tenant=1)
        order: list[str] = []
        gates = {name: asyncio.Event() for name in ("a1", "a2", "b1", "c1")}

        async def stream(name: str) -> None:
            async with gate.admit(name[0]):
                order.append(name)
                await gates[name].wait()

        tasks = [asyncio.create_task(stream(name)) for name in ("a1", "b1", "a2", "c1")]
        await asyncio.sleep(0.01)
        assert order == ["a1", "b1"]
        gates["b1"].set()  # b's slot: a2 waits longer, but a is at its share, so c1 gets it
        await asyncio.sleep(0.01)
        assert order == ["a1", "b1", "c1"]
        gates["a1"].set()
        await asyncio.sleep(0.01)
        assert order == ["a1", "b1", "c1", "a2"]
        for event in gates.values():
            event.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())


def test_due_jobs_take_turns_between_tenants_and_jobs_not_yet_due_wait():
    """One tenant's streams that all fell due (deadlines long past) do not all go ahead of
    another tenant's first piece; a job not yet due goes after every due one."""

    async def main() -> None:
        pool = WorkerPool("turns", workers=1)
        order: list[str] = []
        gate = threading.Event()

        def job(name: str) -> str:
            if name == "blocker":
                gate.wait(5)
            order.append(name)
            return name

        now = time.monotonic()
        blocker = asyncio.ensure_future(pool.run(now, job, "blocker", tenant="hostile"))
        await asyncio.sleep(0.05)
        hostile = [asyncio.ensure_future(pool.run(now - 60 + i, job, f"hostile-{i}", tenant="hostile")) for i in range(3)]
        later = asyncio.ensure_future(pool.run(now + 30, job, "other-buffered", tenant="other"))
        first = asyncio.ensure_future(pool.run(now, job, "other-first-piece", tenant="other"))
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(blocker, *hostile, later, first)
        assert order == ["blocker", "other-first-piece", "hostile-0", "hostile-1", "hostile-2", "other-buffered"]
        pool.close()

    asyncio.run(main())
