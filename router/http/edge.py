"""The HTTP edge: what one connection or one client address may hold, enforced in the server's
own protocol, before the application sees a request.

`EdgeProtocol` is uvicorn's httptools protocol with the limits of config `server:` added
(router/config.py `ServerSpec`). `voxrouter serve` runs it (`uvicorn.run(http=EdgeProtocol)`):

- **Header deadline** (`header_timeout_s`): the request head (request line and headers) must
  be complete within this of the connection opening, or of the first byte of the next request
  on a kept-alive connection. Otherwise: 408 and close when part of a head came, a plain close
  when nothing did (a pre-opened browser or pool connection is not answered).
- **Header size** (`max_header_bytes`): a head larger than this is answered 431 and the
  connection closed; the parser never holds more than this (plus at most one socket read of a
  pipelined request that followed a body in the same read).
- **Connections** (`max_connections` in all, `max_connections_per_client` per client address;
  an IPv6 client is its /64): one more is answered at once, before anything is read or parsed,
  with 503 `provider_unavailable` (`server_at_capacity`) or 429 `rate_limited`
  (`too_many_connections`) and closed. The counts are per
  worker process, and behind a reverse proxy the client address is the proxy's.
- **Body deadline** (`body_timeout_s`): the request body must be complete within this of its
  head; a client still trickling it is dropped (the application sees a disconnect).
- **Idle keep-alive**: uvicorn's own `timeout_keep_alive` (from `keep_alive_timeout_s`, or
  `voxrouter serve --timeout-keep-alive`) closes a connection idle between requests.
- **Write deadline** (`write_timeout_s`): when the transport's write buffer stays full (the
  client reads nothing, or too little to drain it) for this long, the connection is reset.
  uvicorn then marks the request disconnected: a `send` blocked on flow control returns and
  `receive` answers `http.disconnect`, so a streaming response is cancelled and releases what
  it holds. The same timer covers a finished response that the client never reads (a plain
  close would wait on that buffer forever).

Refusals are written, the write side is shut, and the client's unread bytes are drained for a
moment (`LINGER_S`, or until the client closes its side: uvicorn closes on EOF) before the
socket closes, so the answer is not lost to a TCP reset. The
per-read cost is a counter and a comparison while a head is being read; timers are armed per
connection, per request head and when the write buffer fills, never per read or write.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import resource
import socket
import struct
import time
import weakref
from typing import Any, ClassVar

from prometheus_client import Counter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from voxrouter.router.config import ServerSpec

logger = logging.getLogger("voxrouter.edge")

LINGER_S = 2.0  # after a refusal: how long the client's unread bytes are drained before the close
MAX_LINGERING = 1024  # refused connections draining at once per process; beyond, closed at once
_WARN_EVERY_S = 10.0  # one log line per refusal reason per this, not one per connection

REFUSALS = Counter("voxrouter_edge_refusals", "Connections refused or cut by the HTTP edge (router/edge.py).", ["reason"])


@dataclasses.dataclass(frozen=True)
class EdgeLimits:
    max_header_bytes: int = 16_384
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    write_timeout_s: float = 30.0
    max_connections: int = 4096
    max_connections_per_client: int = 256
    send_buffer_bytes: int = 262_144

    @classmethod
    def from_spec(cls, spec: ServerSpec) -> "EdgeLimits":
        return cls(
            max_header_bytes=spec.max_header_bytes,
            header_timeout_s=spec.header_timeout_s,
            body_timeout_s=spec.body_timeout_s,
            write_timeout_s=spec.write_timeout_s,
            max_connections=spec.max_connections,
            max_connections_per_client=spec.max_connections_per_client,
            send_buffer_bytes=spec.send_buffer_bytes,
        )


_process_limits: EdgeLimits | None = None


def process_limits() -> EdgeLimits:
    """This process's limits: set by `voxrouter serve`, else (a spawned uvicorn worker) config
    `server:` of VOXROUTER_CONFIG, loaded once at the first connection."""
    global _process_limits
    if _process_limits is None:
        from voxrouter.router.settings import Settings

        _process_limits = EdgeLimits.from_spec(Settings.from_env().load_config().server)
    return _process_limits


def set_process_limits(limits: EdgeLimits) -> None:
    global _process_limits
    _process_limits = limits


def _response(status: int, reason: str, code: str, details: str, extra: bytes = b"") -> bytes:
    body = json.dumps({"error": code, "details": details}).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n".encode()
        + extra
        + b"connection: close\r\n\r\n"
        + body
    )


# The codes are the wire's own (shared/reference/voxrouter-wire.md); the details say which limit.
REQUEST_TIMEOUT = _response(408, "Request Timeout", "invalid_body", "request_timeout: the request headers did not arrive in time")
HEADERS_TOO_LARGE = _response(
    431, "Request Header Fields Too Large", "invalid_body", "headers_too_large: the request line and headers are too large"
)
TOO_MANY_CONNECTIONS = _response(
    429, "Too Many Requests", "rate_limited", "too_many_connections: too many open connections from this address", b"retry-after: 1\r\n"
)
AT_CAPACITY = _response(
    503, "Service Unavailable", "provider_unavailable", "server_at_capacity: the gateway is at its connection limit", b"retry-after: 1\r\n"
)


def client_key(peer: Any) -> str | None:
    """The address a per-client cap counts: the IPv4 address, or the /64 of an IPv6 one
    (one host usually holds a whole /64). None for a Unix socket: not counted per client."""
    if not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
        return None
    host = peer[0]
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


class _Tally:
    """Per uvicorn server (one per worker process): open connections by client, refusals draining."""

    def __init__(self) -> None:
        self.per_client: dict[str | None, int] = {}
        self.lingering = 0


_TALLIES: "weakref.WeakKeyDictionary[Any, _Tally]" = weakref.WeakKeyDictionary()
_last_warned: dict[str, float] = {}


def _refused(reason: str, client: str | None) -> None:
    REFUSALS.labels(reason).inc()  # labelled on first use: a supervisor process never writes a metrics file
    now = time.monotonic()
    if now - _last_warned.get(reason, -_WARN_EVERY_S) >= _WARN_EVERY_S:
        _last_warned[reason] = now
        logger.warning("edge: %s (client %s); further ones are counted in voxrouter_edge_refusals", reason, client)


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the edge limits (see the module docstring).

    `limits` None: read from the environment's config. `EdgeProtocol.with_limits(...)` binds
    others (tests, embedding); pass the class as `uvicorn.Config(http=...)`.
    """

    limits: ClassVar[EdgeLimits | None] = None

    @classmethod
    def with_limits(cls, limits: EdgeLimits) -> type["EdgeProtocol"]:
        return type(cls.__name__, (cls,), {"limits": limits})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Plain HTTP only: an upgrade would hand the socket to another protocol, past these limits.
        self.ws_protocol_class = None
        self.edge = type(self).limits or process_limits()
        self.tally = _TALLIES.get(self.server_state) or _TALLIES.setdefault(self.server_state, _Tally())
        self.client_key: str | None = None
        self.accepted = False  # counted in the tally and in uvicorn's connections
        self.discarding = False  # answered and closing: what still comes in is dropped unparsed
        self.lingering = False
        self.in_head = True  # the next bytes belong to a request head
        self.head_bytes = 0
        self.head_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        self.write_timer: asyncio.TimerHandle | None = None
        self.linger_timer: asyncio.TimerHandle | None = None

    def _unsupported_upgrade_warning(self) -> None:
        pass  # uvicorn logs every `Upgrade:` request; the request is served as plain HTTP

    # --- connections ---

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        key = client_key(transport.get_extra_info("peername"))
        self.client_key = key
        if len(self.connections) >= self.edge.max_connections:
            self.transport = transport
            _refused("server_at_capacity", key)
            self._answer_and_close(AT_CAPACITY)
            return
        count = self.tally.per_client.get(key, 0)
        if key is not None and count >= self.edge.max_connections_per_client:
            self.transport = transport
            _refused("too_many_connections", key)
            self._answer_and_close(TOO_MANY_CONNECTIONS)
            return
        self.tally.per_client[key] = count + 1
        self.accepted = True
        _cap_send_buffer(transport, self.edge.send_buffer_bytes)
        super().connection_made(transport)
        self.head_timer = self.loop.call_later(self.edge.header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self.head_timer, self.body_timer, self.write_timer, self.linger_timer):
            if timer is not None:
                timer.cancel()
        self.head_timer = self.body_timer = self.write_timer = self.linger_timer = None
        if self.lingering:
            self.lingering = False
            self.tally.lingering -= 1
        if not self.accepted:
            return  # refused at once: uvicorn never saw it
        self.accepted = False
        left = self.tally.per_client.get(self.client_key, 1) - 1
        if left > 0:
            self.tally.per_client[self.client_key] = left
        else:
            self.tally.per_client.pop(self.client_key, None)
        super().connection_lost(exc)

    def _answer_and_close(self, response: bytes) -> None:
        """Write a canned answer, shut the write side, drain for a moment, then close."""
        self.discarding = True
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        transport = self.transport
        transport.write(response)
        if self.tally.lingering >= MAX_LINGERING or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()  # FIN once the answer is flushed; reading goes on
        self.lingering = True
        self.tally.lingering += 1
        self.linger_timer = self.loop.call_later(LINGER_S, reset, transport)

    # --- the request head ---

    def data_received(self, data: bytes) -> None:
        if self.discarding:
            return
        while self.in_head:
            if self.head_timer is None:  # the first byte of a request on a kept-alive connection
                self.head_timer = self.loop.call_later(self.edge.header_timeout_s, self._head_timed_out)
            room = self.edge.max_header_bytes - self.head_bytes
            if len(data) <= room:
                self.head_bytes += len(data)
                break
            # More than the head may hold: let the parser see only what is allowed; if the head
            # ends inside it, the rest is body (or the next request) and is fed after.
            self.head_bytes += room
            if room:
                super().data_received(data[:room])
                if self.transport.is_closing() or self.parser is None:
                    return
            if self.in_head and self.head_bytes >= self.edge.max_header_bytes:
                _refused("headers_too_large", self.client_key)
                self._refuse_request(HEADERS_TOO_LARGE)
                return
            data = data[room:]
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        self.body_timer = self.loop.call_later(self.edge.body_timeout_s, self._body_timed_out)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None
        super().on_message_complete()
        self.in_head = True  # what follows is the next request's head
        self.head_bytes = 0

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if not self.in_head or self.discarding or self.transport.is_closing():
            return
        _refused("header_timeout", self.client_key)
        if self.head_bytes or (self.cycle is not None and not self.cycle.response_complete):
            self._refuse_request(REQUEST_TIMEOUT)
        else:
            self.transport.close()  # nothing of a request came: nothing to answer

    def _body_timed_out(self) -> None:
        """The body is still trickling in: drop the connection (the handler reading it sees a
        disconnect; it may already have answered, so no answer is spliced in)."""
        self.body_timer = None
        if self.in_head or self.transport.is_closing():
            return
        _refused("body_timeout", self.client_key)
        reset(self.transport)

    def _refuse_request(self, response: bytes) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            # A response is still going out (the bad head is a pipelined one): no answer can be
            # spliced into it. Drop what comes in, finish that response, then close.
            self.discarding = True
            self.cycle.keep_alive = False
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None
            return
        self._answer_and_close(response)

    # --- writing ---

    def pause_writing(self) -> None:
        if not self.accepted:
            return  # a refusal is a few hundred bytes; uvicorn's flow control was never set up
        super().pause_writing()
        if self.write_timer is None:
            self.write_timer = self.loop.call_later(self.edge.write_timeout_s, self._write_timed_out)

    def resume_writing(self) -> None:
        if not self.accepted:
            return
        super().resume_writing()
        if self.write_timer is not None:
            self.write_timer.cancel()
            self.write_timer = None

    def _write_timed_out(self) -> None:
        """The client has not drained the write buffer in write_timeout_s: drop it. uvicorn's
        connection_lost marks the request disconnected and wakes its send and receive."""
        self.write_timer = None
        _refused("write_timeout", self.client_key)
        reset(self.transport)


def reset(transport: asyncio.BaseTransport) -> None:
    """Drop a connection with a TCP reset: what is still buffered for the client is freed at once
    (a plain close leaves the kernel trying to deliver it to a client that reads nothing)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


def raise_open_files_limit(limits: EdgeLimits, spare: int = 1024) -> None:
    """Lift this process's soft limit on open files so `max_connections` (plus `spare` for the
    database, providers and lingering refusals) fit; warn when even the hard limit is lower."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover - not on this platform
        return
    wanted = limits.max_connections + spare
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    if soft != resource.RLIM_INFINITY and soft < wanted:
        logger.warning(
            "open-files limit %s is below server.max_connections %s + %s spare: raise `ulimit -n` or lower the cap",
            soft, limits.max_connections, spare,
        )


def _cap_send_buffer(transport: asyncio.Transport, size: int) -> None:
    """Bound what the kernel buffers for one client, so the write deadline starts while a
    stalled reader has seconds of audio queued, not the megabytes autotuning would allow."""
    sock = transport.get_extra_info("socket")
    if size and sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
