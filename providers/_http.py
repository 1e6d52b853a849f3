"""Shared HTTP plumbing for the remote adapters: one streaming call, errors mapped to kinds."""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Callable
from urllib.parse import quote

import anyio
import httpx

from voxrouter.providers.base import ErrorKind, Health, ProviderError

ErrorParser = Callable[[bytes], str]
# An upstream that names a condition in a structured field of its error body maps it to a
# kind here, from (status, body); None leaves the kind to the status.
ErrorClassifier = Callable[[int, bytes], ErrorKind | None]


def build_client(
    base_url: str,
    *,
    connect_timeout_s: float,
    read_timeout_s: float,
    max_connections: int,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        transport=transport,
        follow_redirects=False,
    )


def client_for(spec: Any, transport: httpx.AsyncBaseTransport | None = None, base_url: str | None = None) -> httpx.AsyncClient:
    """The client for a provider spec (`ProviderSpec`): its base URL (or `base_url`), timeouts and pool size."""
    return build_client(
        base_url if base_url is not None else spec.resolved_base_url(),
        connect_timeout_s=spec.connect_timeout_s,
        read_timeout_s=spec.read_timeout_s,
        max_connections=spec.max_connections,
        transport=transport,
    )


def path_segment(value: str, *, provider: str, field: str) -> str:
    """`value` as one percent-encoded URL path segment. "." and ".." are refused: they would
    climb the path ("/v1/text-to-speech/../stream" is "/v1/stream" once resolved)."""
    if value in ("", ".", "..") or any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise ProviderError(ErrorKind.bad_request, f"{field} {value!r} is not a valid {provider} id", provider=provider)
    return quote(value, safe="")


def kind_for_status(status: int) -> ErrorKind:
    if status in (401, 403):
        return ErrorKind.auth
    if status == 429:
        return ErrorKind.rate_limited
    if status == 408 or status >= 500:
        return ErrorKind.unavailable if status != 504 else ErrorKind.timeout
    return ErrorKind.bad_request


def _retry_after(response: httpx.Response) -> float | None:
    ms = response.headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            return None
    return None


def error_from_response(
    provider: str, response: httpx.Response, body: bytes, parse: ErrorParser, classify: ErrorClassifier | None = None
) -> ProviderError:
    kind = _classified(classify, response.status_code, body) or kind_for_status(response.status_code)
    try:
        detail = parse(body)
    except Exception:  # a vendor's error body we cannot read is still an error of that status
        detail = ""
    if kind is ErrorKind.auth:
        # Never echo what the upstream says about our key; name the provider only.
        message = f"{provider} rejected the gateway's credentials (HTTP {response.status_code})"
    else:
        message = f"{provider} answered HTTP {response.status_code}" + (f": {detail}" if detail else "")
    return ProviderError(
        kind, message, provider=provider, status=response.status_code, retry_after=_retry_after(response)
    )


def _classified(classify: ErrorClassifier | None, status: int, body: bytes) -> ErrorKind | None:
    if classify is None:
        return None
    try:
        return classify(status, body)
    except Exception:  # an unreadable body says nothing more than its status
        return None


def _transport_error(provider: str, exc: Exception, *, started: bool) -> ProviderError:
    if isinstance(exc, httpx.TimeoutException):
        where = "mid-stream" if started else "before the first byte"
        return ProviderError(ErrorKind.timeout, f"{provider} timed out {where}", provider=provider)
    where = "mid-stream" if started else "while connecting"
    return ProviderError(
        ErrorKind.unavailable, f"{provider} connection failed {where}: {type(exc).__name__}", provider=provider
    )


async def stream_audio(
    client: httpx.AsyncClient,
    provider: str,
    method: str,
    url: str,
    *,
    parse_error: ErrorParser,
    first_byte_timeout_s: float,
    classify_error: ErrorClassifier | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    json: Any = None,
) -> AsyncIterator[bytes]:
    """Send one request and yield the response body as it arrives.

    The whole wait for headers and the first body chunk is bounded by
    `first_byte_timeout_s`; after that the client's read timeout bounds each gap.
    """
    request = client.build_request(method, url, headers=headers, params=params, json=json)
    response: httpx.Response | None = None
    try:
        try:
            with anyio.fail_after(first_byte_timeout_s):
                response = await client.send(request, stream=True)
                if response.status_code >= 400:
                    body = await response.aread()
                    raise error_from_response(provider, response, body, parse_error, classify_error)
                chunks = response.aiter_raw()
                first = await anext(chunks, b"")
        except TimeoutError:
            raise ProviderError(
                ErrorKind.timeout,
                f"{provider} sent no audio within {first_byte_timeout_s:g}s",
                provider=provider,
            ) from None
        except httpx.HTTPError as exc:
            raise _transport_error(provider, exc, started=False) from None
        if first:
            yield first
        try:
            async for chunk in chunks:
                if chunk:
                    yield chunk
        except httpx.HTTPError as exc:
            raise _transport_error(provider, exc, started=True) from None
    finally:
        if response is not None:
            with anyio.CancelScope(shield=True):
                await response.aclose()


async def probe_get(client: httpx.AsyncClient, provider: str, url: str, *, headers: dict[str, str], params: dict[str, Any] | None = None) -> Health:
    """A free GET (a models or voices listing) as a health check."""
    started = time.perf_counter()
    try:
        response = await client.get(url, headers=headers, params=params)
    except httpx.HTTPError as exc:
        return Health(ok=False, reason=f"{type(exc).__name__}")
    latency_ms = (time.perf_counter() - started) * 1000
    if response.status_code in (401, 403):
        return Health(ok=False, reason="auth", latency_ms=latency_ms)
    if response.status_code >= 400:
        return Health(ok=False, reason=f"http_{response.status_code}", latency_ms=latency_ms)
    return Health(ok=True, latency_ms=latency_ms)
