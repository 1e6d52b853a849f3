"""The unit layer's rule: no network sockets, no subprocesses.

Every test here is guarded: connecting or binding an AF_INET/AF_INET6 socket, or starting
a process, fails it with a message that says where it belongs. AF_UNIX stays allowed
(asyncio's event loop wakes itself through a socketpair). The guard is recorded as well as
raised, so code that swallows the error (a retry loop, a broad `except`) still fails the test.
The guard is a function fixture: a module- or session-scoped fixture is set up before it, so
keep those free of sockets and processes too.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from typing import Any, Callable, Generator, Iterator

import pytest

_NETWORK = (socket.AF_INET, socket.AF_INET6)
_CALL_REPORT = pytest.StashKey[pytest.TestReport]()
_MOVE = "a unit test may not {what}: move it to tests/integration (or tests/e2e for real processes)"


class UnitBoundaryError(AssertionError):
    """A unit test reached for the network or a process."""


@pytest.fixture(autouse=True)
def unit_boundary(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Guards every unit test; yields the violations seen so far (the guard's own tests clear it)."""
    violations: list[str] = []

    def refuse(what: str) -> UnitBoundaryError:
        message = _MOVE.format(what=what)
        violations.append(message)
        return UnitBoundaryError(message)

    def guard_socket(name: str) -> None:
        real: Callable[..., Any] = getattr(socket.socket, name)

        def guarded(self: socket.socket, address: Any, *args: Any) -> Any:
            if self.family in _NETWORK:
                raise refuse(f"{name} a network socket (to {address!r})")
            return real(self, address, *args)

        monkeypatch.setattr(socket.socket, name, guarded)

    for name in ("connect", "connect_ex", "bind"):
        guard_socket(name)

    def no_popen(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        raise refuse(f"start a subprocess ({args!r})")

    async def no_asyncio_process(program: Any, *rest: Any, **kwargs: Any) -> Any:
        raise refuse(f"start a subprocess ({program!r})")

    monkeypatch.setattr(subprocess.Popen, "__init__", no_popen)
    monkeypatch.setattr(asyncio, "create_subprocess_exec", no_asyncio_process)
    monkeypatch.setattr(asyncio, "create_subprocess_shell", no_asyncio_process)
    yield violations
    report = request.node.stash.get(_CALL_REPORT, None)
    already_failed = report is not None and report.failed
    if violations and not already_failed:
        pytest.fail(violations[0], pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # The guard's teardown needs to know whether the test already failed (then the
    # violation is in its traceback and needs no second report).
    report = yield
    if report.when == "call":
        item.stash[_CALL_REPORT] = report
    return report
