"""Prometheus metrics: what the gateway served, how fast, what it cost, and how healthy its
providers and engines are. Low cardinality by design: no key, user or organization labels.

Under several uvicorn workers set `PROMETHEUS_MULTIPROC_DIR` (an empty directory shared
by the workers): prometheus-client then keeps each worker's values in files there and
`GET /metrics` adds them up.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from voxrouter.providers.base import Provider

# Speech: from tens of milliseconds to first audio up to half a minute for a long stream.
_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_RTF = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)

REQUESTS = Counter("voxrouter_requests", "Speech requests by outcome.", ["provider", "model", "status", "code"])
TTFB = Histogram("voxrouter_ttfb_seconds", "Time to the first audio byte.", ["provider"], buckets=_SECONDS)
DURATION = Histogram("voxrouter_request_duration_seconds", "Whole speech request, to the last byte.", ["provider"], buckets=_SECONDS)
CHARACTERS = Counter("voxrouter_characters", "Input characters served.", ["provider"])
AUDIO_SECONDS = Counter("voxrouter_audio_seconds", "Seconds of audio served (PCM-based streams).", ["provider"])
TRANSCRIPTIONS = Counter(
    "voxrouter_transcriptions", "Transcription requests by outcome.", ["provider", "model", "status", "code"]
)
TRANSCRIBED_SECONDS = Counter("voxrouter_transcribed_audio_seconds", "Seconds of audio transcribed.", ["provider"])
COST = Counter("voxrouter_cost_micros", "Charged cost in USD micro-dollars.", ["provider"])
RESERVATIONS = Gauge("voxrouter_reservations_in_flight", "Wallet holds of requests still running.", multiprocess_mode="livesum")
BREAKER = Gauge(
    "voxrouter_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open.", ["circuit"], multiprocess_mode="livemax"
)
LIMIT_REJECTIONS = Counter("voxrouter_limit_rejections", "Requests refused by a per-key limit.", ["reason"])
ENGINE_QUEUE = Gauge("voxrouter_engine_queue_depth", "Streams waiting for an engine slot.", ["engine"], multiprocess_mode="livesum")
ENGINE_BUSY = Gauge("voxrouter_engine_busy_workers", "Streams an engine is serving.", ["engine"], multiprocess_mode="livesum")
ENGINE_RTF = Histogram("voxrouter_engine_rtf", "Engine real-time factor per piece (compute / audio seconds).", ["engine"], buckets=_RTF)
FALLBACKS = Counter("voxrouter_fallback_attempts", "Targets that failed or were skipped before one served.", ["provider", "reason"])

BREAKER_VALUES = {"closed": 0, "half-open": 1, "open": 2}


def observe_engines(providers: dict[str, Provider]) -> None:
    """Copy the local engines' live queue state into the gauges (called at scrape time)."""
    for provider in providers.values():
        for engine_id, load in provider.engine_loads().items():
            ENGINE_QUEUE.labels(engine_id).set(load.waiting)
            ENGINE_BUSY.labels(engine_id).set(load.active)


def observe_engine_rtf(engine_id: str, rtf: float) -> None:
    """One inference's real-time factor (a `providers.base.RtfObserver`)."""
    ENGINE_RTF.labels(engine_id).observe(rtf)


async def metrics_endpoint(request: Request) -> Response:
    gateway = request.app.state.gateway
    observe_engines(gateway.providers)
    RESERVATIONS.set(len(gateway.wallet.held))
    for name, circuit in gateway.health.circuits().items():
        BREAKER.labels(name).set(BREAKER_VALUES[circuit.state])
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def process_exiting() -> None:
    """A worker's live gauges leave the sum when it stops (multi-process mode only)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())


# The Prometheus scrape, for operators (not part of the API).
ROUTES = [Route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)]
