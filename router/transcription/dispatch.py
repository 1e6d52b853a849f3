"""A transcription's targets walked in order through the speech path's circuit breakers
(resilience/breaker.py, one `stt:<provider>` circuit per provider on the same health board): the
first target whose upstream gives a transcript serves it; one that fails before a result (its
circuit open, 401/429/5xx, a timeout, every worker busy) hands over to the next. A failure that
is the client's own (a file that does not decode, an option the model refuses) ends it at once."""

from __future__ import annotations

import dataclasses
import logging

from voxrouter.providers.base import ErrorKind, ProviderError
from voxrouter.providers.transcription import Transcript, TranscriptionError, TranscriptionRequest
from voxrouter.router.http.errors import ApiError
from voxrouter.router.resilience.breaker import Circuit, CircuitOpen
from voxrouter.router.resilience.health import HealthBoard
from voxrouter.router.transcription.models import SttTarget

logger = logging.getLogger("voxrouter.transcription")

# A transcriber's failure as the breaker's kind: what says the upstream is unwell is counted.
BREAKER_KINDS = {
    "upstream": ErrorKind.unavailable,
    "unavailable": ErrorKind.not_installed,
    "rate_limited": ErrorKind.rate_limited,
    "auth": ErrorKind.auth,
    "timeout": ErrorKind.timeout,
    "busy": ErrorKind.overloaded,
    "invalid_option": ErrorKind.bad_request,
    "invalid_audio": ErrorKind.bad_request,
}
CLIENTS_OWN = frozenset({"invalid_option", "invalid_audio"})
# How a transcriber's failure reaches the client: (status, code).
STATUSES = {
    "invalid_audio": (400, "invalid_audio"),
    "invalid_option": (400, "invalid_body"),
    "busy": (503, "provider_unavailable"),
    "unavailable": (503, "provider_unavailable"),
    "rate_limited": (503, "provider_unavailable"),
    "auth": (502, "upstream_error"),
    "timeout": (504, "upstream_error"),
    "upstream": (502, "upstream_error"),
}


@dataclasses.dataclass(frozen=True)
class Served:
    target: SttTarget
    transcript: Transcript


def circuit(health: HealthBoard, target: SttTarget) -> Circuit:
    return health.stt_circuit(target.provider_id)


def api_error(target: SttTarget, exc: TranscriptionError) -> ApiError:
    status, code = STATUSES.get(exc.kind, (502, "upstream_error"))
    headers = None
    if status == 503:
        wait = exc.retry_after if exc.retry_after is not None else (1 if exc.kind == "busy" else 60)
        headers = {"Retry-After": str(max(1, round(wait)))}
    return ApiError(status, code, f"{target.label}: {exc.message}", headers=headers)


def _circuit_error(exc: CircuitOpen) -> ApiError:
    return ApiError(
        503,
        "provider_unavailable",
        f"{exc.name} is failing; its circuit breaker is {exc.reason.removeprefix('circuit_').replace('_', '-')}",
        headers={"Retry-After": str(max(1, int(-(-exc.retry_after_s // 1))))},
    )


def _attempt(target: SttTarget, outcome: str, reason: str | None = None) -> dict[str, str | None]:
    return {"provider": target.provider_id, "model": target.model_id, "voice": None, "outcome": outcome, "reason": reason}


async def transcribe(
    health: HealthBoard, targets: list[SttTarget], job: TranscriptionRequest, org: str, attempts: list[dict[str, str | None]]
) -> Served:
    """The first transcript among `targets`, or the last failure as an ApiError; each call and
    pass-over is appended to `attempts` (the usage row's)."""
    last: ApiError | None = None
    for index, target in enumerate(targets):
        breaker = circuit(health, target)
        try:
            ticket = breaker.admit(org)
        except CircuitOpen as exc:
            attempts.append(_attempt(target, "skipped", exc.reason))
            last = _circuit_error(exc)
            continue
        try:
            transcript = await target.transcriber.transcribe(dataclasses.replace(job, model=target.model_id))
        except TranscriptionError as exc:
            kind = BREAKER_KINDS.get(exc.kind, ErrorKind.unavailable)
            ticket.failed(ProviderError(kind, exc.message, provider=target.provider_id))
            attempts.append(_attempt(target, "failed", exc.kind))
            last = api_error(target, exc)
            if exc.kind in CLIENTS_OWN and index == 0:
                raise last from None
            if index + 1 < len(targets):
                logger.warning("transcription: %s failed (%s); trying %s", target.label, exc.kind, targets[index + 1].label)
            continue
        except BaseException:
            ticket.abandoned()
            raise
        ticket.succeeded()
        attempts.append(_attempt(target, "served"))
        return Served(target, transcript)
    assert last is not None
    raise last
