"""The HTTP edge (router/edge.py) over real loopback sockets: header deadline and size, connection
caps, idle connections, the write deadline (with the real gateway releasing what a stalled
stream held), and the same limits through `voxrouter serve` from a config file."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time
import uuid
from typing import Any, Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from tests.conftest import emulated_config
from tests.emulators.audio import encoded
from tests.emulators.behaviour import Behaviour
from voxrouter.router.http import edge as edge_module
from voxrouter.router.http.app import create_app
from voxrouter.router.http.edge import EdgeLimits, EdgeProtocol
from voxrouter.router.server_commands import create_key
from voxrouter.router.settings import Settings

SLACK_S = 1.5  # scheduling slack on a loaded CI machine


class EdgeServer:
    """uvicorn with EdgeProtocol on a free loopback port, in a background thread."""

    def __init__(self, app: Any, limits: EdgeLimits, *, keep_alive_s: float = 75, lifespan: str = "off") -> None:
        self.app = app
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app, http=EdgeProtocol.with_limits(limits), log_level="warning", lifespan=lifespan, access_log=False,
            timeout_graceful_shutdown=1, timeout_keep_alive=keep_alive_s,  # type: ignore[arg-type]
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "EdgeServer":
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)


class Observed:
    def __init__(self) -> None:
        self.closed = threading.Event()  # the endless stream's generator was closed
        self.chunks = 0


def demo_app(observed: Observed) -> Starlette:
    async def hello(request: Request) -> PlainTextResponse:
        body = await request.body()
        return PlainTextResponse(f"ok {len(body)}")

    async def endless(request: Request) -> StreamingResponse:
        async def chunks() -> Any:
            try:
                while True:
                    observed.chunks += 1
                    yield b"x" * 65536
                    await asyncio.sleep(0.005)
            finally:
                observed.closed.set()

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    return Starlette(routes=[Route("/", hello, methods=["GET", "POST"]), Route("/endless", endless)])


LIMITS = EdgeLimits(
    max_header_bytes=8192, header_timeout_s=1.0, body_timeout_s=1.0, write_timeout_s=1.0, max_connections=50,
    max_connections_per_client=4,
)


@pytest.fixture
def observed() -> Observed:
    return Observed()


@pytest.fixture
def edge(observed: Observed) -> Iterator[EdgeServer]:
    with EdgeServer(demo_app(observed), LIMITS, keep_alive_s=1.0) as server:
        yield server


def connect(port: int, source: str = "127.0.0.1", rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.settimeout(5)
    return sock


def get(path: str = "/", extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: test\r\n" + extra + b"\r\n"


def read_response(sock: socket.socket) -> bytes:
    """One response with a content-length (kept-alive connections)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, f"closed after {data!r}"
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def read_until_closed(sock: socket.socket, timeout_s: float) -> tuple[bytes, float]:
    """Everything until the server closes; and when it did (seconds from now)."""
    started = time.monotonic()
    sock.settimeout(timeout_s)
    data = b""
    try:
        while piece := sock.recv(65536):
            data += piece
    except ConnectionResetError:
        pass
    return data, time.monotonic() - started


def is_closed(sock: socket.socket, timeout_s: float) -> bool:
    try:
        data, _ = read_until_closed(sock, timeout_s)
    except socket.timeout:
        return False
    return True


def test_a_slow_header_sender_gets_408_within_the_header_deadline(edge):
    sock = connect(edge.port)
    started = time.monotonic()
    sock.sendall(b"GET / HTTP/1.1\r\n")
    sock.settimeout(0.25)
    answer = b""
    # One header line every 0.25 s, as a slowloris would: never finishing the head.
    while time.monotonic() - started < LIMITS.header_timeout_s + SLACK_S:
        try:
            sock.sendall(b"X-Slow: 1\r\n")
        except (BrokenPipeError, ConnectionResetError):
            break
        try:
            answer += sock.recv(4096)
            if answer:
                break
        except socket.timeout:
            pass
    rest, _ = read_until_closed(sock, SLACK_S)
    answer += rest
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"error": "invalid_body"' in answer and b"request_timeout" in answer and b"connection: close" in answer
    assert LIMITS.header_timeout_s - 0.1 <= elapsed <= LIMITS.header_timeout_s + SLACK_S


def test_a_body_that_trickles_in_is_dropped_at_the_body_deadline(edge):
    """The head is quick, the body is sent a byte at a time: the connection goes at the deadline."""
    sock = connect(edge.port)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n")
    started = time.monotonic()
    closed = False
    while time.monotonic() - started < LIMITS.body_timeout_s + SLACK_S + 1:
        try:
            sock.sendall(b"x")
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    assert closed or is_closed(sock, SLACK_S)
    assert elapsed <= LIMITS.body_timeout_s + SLACK_S + 1
    # A body that arrives in time is served as ever.
    quick = connect(edge.port)
    quick.sendall(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc")
    assert read_response(quick).endswith(b"ok 3")


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(edge):
    sock = connect(edge.port)
    data, elapsed = read_until_closed(sock, LIMITS.header_timeout_s + SLACK_S)
    assert data == b"" and elapsed <= LIMITS.header_timeout_s + SLACK_S


def test_idle_connections_are_closed(observed):
    """A fresh connection that sends nothing: closed at the header deadline. Between requests the
    keep-alive timeout applies instead (longer here), and each request gets a fresh head deadline."""
    limits = dataclasses.replace(LIMITS, header_timeout_s=0.5)
    with EdgeServer(demo_app(observed), limits, keep_alive_s=1.5) as server:
        fresh = connect(server.port)
        sock = connect(server.port)
        for _ in range(2):
            sock.sendall(get())
            assert read_response(sock).startswith(b"HTTP/1.1 200 ")
            time.sleep(0.8)  # idle longer than the head deadline, shorter than the keep-alive
        data, elapsed = read_until_closed(fresh, 0.1)
        assert data == b""
        data, elapsed = read_until_closed(sock, 1.5 + SLACK_S)
        assert data == b"" and 0.3 <= elapsed <= 1.5 + SLACK_S


def test_a_64_kb_header_gets_431_and_a_close(edge):
    sock = connect(edge.port)
    sock.sendall(get(extra=b"X-Big: " + b"a" * 65536 + b"\r\n"))
    answer, _ = read_until_closed(sock, 5)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"error": "invalid_body"' in answer and b"headers_too_large" in answer
    # Just under the cap is served, and so is a small head with a body in the same write.
    ok = connect(edge.port)
    ok.sendall(get(extra=b"X-Big: " + b"a" * (LIMITS.max_header_bytes - 100) + b"\r\n"))
    assert read_response(ok).startswith(b"HTTP/1.1 200 ")
    body = b"b" * 50_000
    ok.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert read_response(ok).endswith(b"ok 50000")
    ok.sendall(get())  # the next head is counted afresh
    assert read_response(ok).startswith(b"HTTP/1.1 200 ")


def test_the_per_client_cap_refuses_more_connections_from_one_address_until_one_closes(edge):
    held = [connect(edge.port) for _ in range(LIMITS.max_connections_per_client)]
    for sock in held:
        sock.sendall(get())
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
    extra = connect(edge.port)
    extra.sendall(get())
    answer, _ = read_until_closed(extra, 5)
    assert answer.startswith(b"HTTP/1.1 429 ") and b'"error": "rate_limited"' in answer and b"too_many_connections" in answer, answer
    other = connect(edge.port, source="127.0.0.2")  # another client is not affected
    other.sendall(get())
    assert read_response(other).startswith(b"HTTP/1.1 200 ")
    held.pop().close()
    time.sleep(0.1)
    again = connect(edge.port)
    again.sendall(get())
    assert read_response(again).startswith(b"HTTP/1.1 200 ")


def test_the_overall_cap_answers_503():
    limits = EdgeLimits(max_header_bytes=8192, header_timeout_s=5, max_connections=3, max_connections_per_client=100)
    with EdgeServer(demo_app(Observed()), limits) as server:
        held = [connect(server.port, source=f"127.0.0.{i + 1}") for i in range(3)]
        for sock in held:
            sock.sendall(get())
            assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        extra = connect(server.port, source="127.0.0.9")
        extra.sendall(get())
        answer, _ = read_until_closed(extra, 5)
        assert answer.startswith(b"HTTP/1.1 503 ") and b'"error": "provider_unavailable"' in answer, answer
        assert b"server_at_capacity" in answer and b"retry-after: 1" in answer.lower()
        held.pop().close()
        time.sleep(0.1)
        with httpx.Client() as client:
            assert client.get(server.url + "/").status_code == 200


def write_timeouts() -> float:
    return edge_module.REFUSALS.labels("write_timeout")._value.get()


def test_a_client_that_reads_nothing_is_dropped_after_the_write_deadline(edge, observed):
    cuts = write_timeouts()
    sock = connect(edge.port, rcvbuf=4096)
    sock.sendall(get("/endless"))
    started = time.monotonic()
    assert observed.closed.wait(LIMITS.write_timeout_s + 3), "the stream was never cancelled"
    assert time.monotonic() - started >= LIMITS.write_timeout_s - 0.1
    assert write_timeouts() == cuts + 1
    assert is_closed(sock, 2)
    deadline = time.monotonic() + 2
    while edge.server.server_state.connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not edge.server.server_state.connections


def test_a_client_that_keeps_reading_is_not_cut(edge, observed):
    sock = connect(edge.port)
    sock.sendall(get("/endless"))
    received = 0
    started = time.monotonic()
    while time.monotonic() - started < LIMITS.write_timeout_s * 2.5:
        received += len(sock.recv(1 << 20))
    assert received > 1_000_000 and not observed.closed.is_set()


def test_an_upgrade_request_is_plain_http_and_its_connection_is_counted_out(edge):
    sock = connect(edge.port)
    sock.sendall(get(extra=b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"))
    assert read_response(sock).startswith(b"HTTP/1.1 200 ")
    tally = edge_module._TALLIES[edge.server.server_state]
    assert tally.per_client == {"127.0.0.1": 1}
    sock.close()
    deadline = time.monotonic() + 2
    while tally.per_client and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tally.per_client == {}


def test_the_gateway_releases_a_stalled_stream_after_the_write_deadline(emulators, tmp_path):
    """The real app: a client that never reads a long stream is cut, the upstream stream is
    cancelled, the wallet hold and the key's concurrency slot are released.

    The deadline starts once the kernel's buffers are full too (up to tcp_wmem's 4 MB here):
    the emulator streams ~23 MB of PCM at ~3 MB/s, so that takes about a second."""
    openai = emulators["openai"]
    openai.state.behaviour = Behaviour(first_byte_delay_s=0.01, audio_duration_s=480, stream_time_s=8, chunks=800)
    encoded("pcm", 480)  # made (and cached) now, not inside the gateway's first-byte deadline
    cuts = write_timeouts()
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'gw.db'}", config=emulated_config(emulators))
    with EdgeServer(create_app(settings), LIMITS, lifespan="on") as server:
        key = asyncio.run(create_key(settings, f"org-{uuid.uuid4().hex[:8]}", "test", 5_000_000, max_concurrency=1))
        body = b'{"model": "openai/tts-1", "voice": "alloy", "input": "Hello there.", "response_format": "pcm"}'
        sock = connect(server.port, rcvbuf=4096)
        sock.sendall(
            b"POST /v1/audio/speech HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + key.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        head = sock.recv(4096)  # the status line, then nothing more is read
        assert head.startswith(b"HTTP/1.1 200 "), head
        gateway = server.app.state.gateway
        deadline = time.monotonic() + LIMITS.write_timeout_s + 8
        while (gateway.wallet.held or not openai.state.cancelled) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert openai.state.cancelled == 1 and not gateway.wallet.held
        assert write_timeouts() == cuts + 1
        assert is_closed(sock, 2)  # reset: the megabytes buffered for it are dropped, not delivered
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as client:
            assert client.get("/v1/credits").json()["reservedMicros"] == 0
            openai.state.behaviour = Behaviour()
            # max_concurrency 1: the stalled request's slot is free again.
            again = client.post("/v1/audio/speech", json={"model": "openai/tts-1", "voice": "alloy", "input": "Hi."})
            assert again.status_code == 200, again.text


