"""The unit layer's guard (tests/unit/conftest.py) refuses sockets and processes."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import pytest

from tests.unit.conftest import UnitBoundaryError


def test_connecting_a_network_socket_is_refused(unit_boundary: list[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(UnitBoundaryError, match="move it to tests/integration"):
            sock.connect(("127.0.0.1", 9))
    assert len(unit_boundary) == 1
    unit_boundary.clear()


def test_binding_a_network_socket_is_refused_even_when_the_error_is_swallowed(unit_boundary: list[str]) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("::1", 0))
        except Exception:  # what a retry loop or a broad handler would do
            pass
    assert unit_boundary and "bind a network socket" in unit_boundary[0]
    unit_boundary.clear()


def test_a_subprocess_is_refused(unit_boundary: list[str]) -> None:
    with pytest.raises(UnitBoundaryError, match="start a subprocess"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)

    async def spawn() -> None:
        await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")

    with pytest.raises(UnitBoundaryError, match="start a subprocess"):
        asyncio.run(spawn())
    assert len(unit_boundary) == 2
    unit_boundary.clear()


def test_unix_sockets_and_the_event_loop_still_work() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(b"x")
        assert right.recv(1) == b"x"

    async def tick() -> int:
        await asyncio.sleep(0)
        return 1

    assert asyncio.run(tick()) == 1
