"""`voxrouter engine serve`: local engines as an HTTP service, for a GPU node behind a gateway.

The wire is the one the gateway's `local` provider speaks to an engine with a `url:`
(`voxrouter.providers.local._RemoteEngine`): an OpenAI-shaped `POST /v1/audio/speech` that only
answers `response_format: "pcm"` (24 kHz s16le mono, streamed as it is synthesised), a
voices listing, and errors as `{"error": code, "details": text}`. Nothing is sent until
the first audio exists, so every failure before audio has its own status:

    400 invalid_model         no engine by that name here
    400 invalid_body          bad JSON or fields, unknown voice, bad provider_options
    401 unauthorized          VOXROUTER_ENGINE_TOKEN is set and the bearer token differs
    413 invalid_body          body over 1 MiB
    429 concurrency_limited   every stream slot and queue place taken (Retry-After)
    503 provider_unavailable  no slot freed in time (Retry-After), or the engine cannot
                              run here: then the body has `"reason": "model_not_installed"`
                              (the gateway reads that field, never the details' text)
    500 internal_error        anything else (logged here, never echoed)

A client that hangs up stops its request at once: mid-stream, the response closes the
engine's stream (freeing the stream slot and dropping the piece not yet started); while
still waiting for a slot or the first audio, the request leaves the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import os
from typing import Any, AsyncIterator, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from voxrouter.local_engines.base import EngineError, EngineNotInstalled, EngineTimeout, InvalidOption, UnknownVoice
from voxrouter.local_engines.pool import EngineBusy
from voxrouter.local_engines.runner import EngineRunner
from voxrouter.providers.local import NOT_INSTALLED, engine_voice
from voxrouter.router.http.body import read_body
from voxrouter.router.http.errors import EXCEPTION_HANDLERS, ApiError, error_response

logger = logging.getLogger("voxrouter.engines")

TOKEN_ENV = "VOXROUTER_ENGINE_TOKEN"
MAX_BODY_BYTES = 1_048_576
PCM_MEDIA_TYPE = "audio/l16; rate=24000; channels=1"
_OPEN_PATHS = frozenset({"/healthz"})


class EngineSpeechRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str  # the engine id, as configured on this node ("kokoro", "piper", ...)
    input: str = Field(min_length=1)
    voice: str = Field(min_length=1)
    response_format: Literal["pcm"]  # 24 kHz s16le mono; the gateway transcodes
    speed: float | None = None
    provider_options: dict[str, Any] = {}


def _runners(request: Request) -> dict[str, EngineRunner]:
    return request.app.state.runners


def _unavailable(runner: EngineRunner) -> str | None:
    """Why the engine cannot speak here (weights or runtime absent, or it failed to load), or None."""
    if reason := runner.missing():
        return reason
    if runner.load_error is not None:
        return f"failed to load ({type(runner.load_error).__name__})"
    return None


class _NotInstalled(ApiError):
    """The engine cannot run here: a 503 whose body's `reason` says so to the gateway."""


def _not_installed(engine_id: str, reason: str) -> ApiError:
    return _NotInstalled(503, "provider_unavailable", f"{engine_id}: {reason} ({NOT_INSTALLED})", headers={"Retry-After": "60"})


async def _not_installed_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _NotInstalled)
    body = {"error": exc.code, "details": exc.details, "reason": NOT_INSTALLED}
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def _api_error(engine_id: str, exc: Exception) -> ApiError:
    """The status for an engine failure before any audio was sent."""
    if isinstance(exc, EngineBusy):
        if exc.queue_full:
            return ApiError(429, "concurrency_limited", f"{engine_id}: {exc}", headers=_retry_after(exc.retry_after_s))
        return ApiError(503, "provider_unavailable", f"{engine_id}: {exc}", headers=_retry_after(exc.retry_after_s))
    if isinstance(exc, EngineNotInstalled):
        return _not_installed(engine_id, str(exc))
    if isinstance(exc, EngineTimeout):
        return ApiError(504, "upstream_error", f"{engine_id}: {exc}")
    if isinstance(exc, (UnknownVoice, InvalidOption, EngineError)):
        return ApiError(400, "invalid_body", str(exc))
    logger.error("engine %s failed before any audio", engine_id, exc_info=exc)
    return ApiError(500, "internal_error", f"{engine_id} failed to synthesise; the engine server's log has the details")


async def create_speech(request: Request) -> Response:
    body = await read_body(request, EngineSpeechRequest, MAX_BODY_BYTES)
    runners = _runners(request)
    runner = runners.get(body.model)
    if runner is None:
        raise ApiError(400, "invalid_model", f"unknown_model: {body.model!r} (this server runs: {', '.join(runners) or 'none'})")
    if not body.input.strip():
        raise ApiError(400, "invalid_body", "input: has nothing to speak")
    if reason := _unavailable(runner):
        raise _not_installed(body.model, reason)
    try:
        utterance = await asyncio.to_thread(runner.utterance, body.voice, body.speed, body.provider_options)
    except Exception as exc:
        raise _api_error(body.model, exc) from None

    chunks = runner.stream(body.input, utterance)
    try:
        first = await _first_audio(request, chunks)
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await chunks.aclose()  # type: ignore[attr-defined]
        if isinstance(exc, _ClientGone):
            logger.info("engine %s: the client hung up before the first audio", body.model)
            return Response(status_code=499)  # never sent: there is nobody to send it to
        if isinstance(exc, StopAsyncIteration):
            raise ApiError(400, "invalid_body", "input: has nothing to speak (no audio came of it)") from None
        if isinstance(exc, Exception):
            raise _api_error(body.model, exc) from None
        raise
    return PcmStreamResponse(_continue(body.model, first, chunks), media_type=PCM_MEDIA_TYPE)


class _ClientGone(Exception):
    pass


async def _first_audio(request: Request, chunks: AsyncIterator[bytes]) -> bytes:
    """The stream's first audio, given up on if the client hangs up meanwhile: a request
    waiting for a stream slot (or for its first piece) then leaves the queue at once
    instead of taking a slot and synthesising for nobody."""

    async def next_chunk() -> bytes:
        return await anext(chunks)

    audio = asyncio.ensure_future(next_chunk())
    hangup = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({audio, hangup}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        audio.cancel()  # if still waiting: CancelledError inside the engine's stream, which leaves the queue
        hangup.cancel()
        try:
            await asyncio.wait({audio, hangup})
        except asyncio.CancelledError:  # this request is cancelled too: let the engine's stream unwind first
            await asyncio.wait({audio, hangup})
            raise
        if not hangup.cancelled():
            hangup.exception()  # retrieved: a receive() that failed says nothing about the audio
    if audio.cancelled():
        raise _ClientGone()
    return audio.result()


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read: nothing else can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _continue(engine_id: str, first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The primed stream. A failure after headers re-raises, so the server aborts the
    response and the client sees a broken stream rather than a short, complete one."""
    try:
        yield first
        async for chunk in rest:
            yield chunk
    except Exception as exc:
        logger.error("engine %s failed mid-stream (%s); aborting the response", engine_id, type(exc).__name__)
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await rest.aclose()  # type: ignore[attr-defined]


class PcmStreamResponse(StreamingResponse):
    """A StreamingResponse that always closes its iterator when it stops.

    On a client disconnect Starlette cancels the task sending the body; if that lands while
    the generator waits at a `yield` (inside `send`), the generator would only be closed
    whenever it is garbage-collected. Closing it here frees the engine's slot at once.
    """

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[union-attr]


async def list_voices(request: Request) -> Response:
    voices = []
    for engine_id, runner in _runners(request).items():
        if _unavailable(runner):
            continue
        for listed in await asyncio.to_thread(runner.voices):
            voice = engine_voice(listed, engine_id)
            voices.append(
                {
                    "id": voice.id,
                    "name": voice.name,
                    "language": voice.language,
                    "labels": dict(voice.labels),
                    "model_compatibility": list(voice.model_compatibility),
                }
            )
    return JSONResponse({"voices": voices})


async def engine_status(request: Request) -> Response:
    states: list[dict[str, str]] = []
    for engine_id, runner in _runners(request).items():
        if _unavailable(runner):
            states.append({"id": engine_id, "state": "unavailable", "reason": NOT_INSTALLED})
        else:
            states.append({"id": engine_id, "state": "available"})
    return JSONResponse(states)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


ROUTES = [
    Route("/v1/audio/speech", create_speech, methods=["POST"]),
    Route("/v1/voices", list_voices, methods=["GET"]),
    Route("/v1/status", engine_status, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
]


class BearerTokenMiddleware:
    """Every path but /healthz needs `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in _OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                response = error_response(
                    401, "unauthorized", "this engine server needs 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"}
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "unexpected engine server error; the engine server's log has the details")


async def _load(engine_id: str, runner: EngineRunner) -> None:
    if reason := runner.missing():
        logger.warning("engine %s is not installed here: %s", engine_id, reason)
        return
    try:
        await asyncio.to_thread(runner.load)
    except Exception as exc:
        runner.load_error = exc
        logger.error("engine %s failed to load", engine_id, exc_info=exc)


def create_engine_app(runners: dict[str, EngineRunner], *, preload: bool = True, token: str | None = None) -> Starlette:
    """The engine service for `runners` (engine id -> runner). `token` (default: the
    VOXROUTER_ENGINE_TOKEN environment variable) makes every route but /healthz need it."""
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.runners = runners
        try:
            if preload:
                for engine_id, runner in runners.items():
                    await _load(engine_id, runner)
            yield
        finally:
            for runner in runners.values():
                runner.close()

    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(BearerTokenMiddleware, token=token)] if token else [],
        exception_handlers={**EXCEPTION_HANDLERS, _NotInstalled: _not_installed_error, Exception: _unexpected},  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    app.state.runners = runners  # also without a lifespan (tests that skip it)
    return app
