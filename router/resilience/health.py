"""What the gateway knows of each provider's health, for dispatch and `GET /v1/status`.

Every remote provider has one circuit breaker, every local engine its own. The state
a client sees:

- `unavailable`: `missing_api_key`, `model_not_installed`, or `circuit_open`;
- `degraded`: `circuit_half_open` (a trial call decides), or recent failures / a failed
  free probe while the circuit is still closed;
- `available` otherwise.

A background chore probes with free calls only (the voices or models listing, an
engine's load state), never paid synthesis: a passing probe moves an open circuit
whose wait is over to half-open, a failing one keeps it open for another period.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Literal

from voxrouter.providers.base import Provider
from voxrouter.router.config import Config
from voxrouter.router.resilience.breaker import Circuit

logger = logging.getLogger("voxrouter.health")

State = Literal["available", "degraded", "unavailable"]
PROBE_TIMEOUT_S = 10.0


@dataclasses.dataclass
class _Probe:
    at: float = 0.0
    ok: bool = True
    reason: str | None = None


def circuit_id(provider: Provider, model_id: str) -> str:
    """Local providers break per engine; a remote provider is one upstream."""
    return f"{provider.id}/{model_id}" if provider.features.per_model_engines else provider.id


class HealthBoard:
    def __init__(self, config: Config, providers: dict[str, Provider]) -> None:
        self._config = config
        self._providers = providers
        self._circuits: dict[str, Circuit] = {}
        self._probes: dict[str, _Probe] = {}

    def circuit(self, provider: Provider, model_id: str) -> Circuit:
        cid = circuit_id(provider, model_id)
        circuit = self._circuits.get(cid)
        if circuit is None:
            circuit = self._circuits[cid] = Circuit(cid, self._config.breaker(provider.id))
        return circuit

    def stt_circuit(self, provider_id: str) -> Circuit:
        """A provider's speech-to-text circuit (`stt:<provider>`): its own upstream endpoint, broken
        apart from the provider's speech; the breaker settings are the provider's."""
        cid = f"stt:{provider_id}"
        circuit = self._circuits.get(cid)
        if circuit is None:
            spec = self._config.breaker(provider_id) if provider_id in self._config.providers else self._config.resilience.breaker
            circuit = self._circuits[cid] = Circuit(cid, spec)
        return circuit

    def circuits(self) -> dict[str, Circuit]:
        return dict(self._circuits)

    def state(self, provider: Provider, model_id: str | None = None) -> tuple[State, str | None]:
        reason = provider.unavailable_reason(model_id) if model_id else (None if provider.configured else "missing_api_key")
        if reason is not None:
            return "unavailable", reason
        cid = circuit_id(provider, model_id) if model_id else provider.id
        circuit = self._circuits.get(cid)
        if circuit is not None and circuit.state == "open":
            return "unavailable", "circuit_open"
        if circuit is not None and circuit.state == "half-open":
            return "degraded", "circuit_half_open"
        probe = self._probes.get(provider.id)
        probe_failed = probe is not None and not probe.ok and (circuit is None or probe.at > circuit.last_success_at)
        if (circuit is not None and circuit.failures > 0) or probe_failed:
            return "degraded", None
        return "available", None

    async def probe_due(self, now: float | None = None) -> None:
        """One round of the background chore: probe what is due, concurrently."""
        now = time.monotonic() if now is None else now
        interval = self._config.resilience.probe_interval_s
        due = []
        for provider in self._providers.values():
            if not provider.configured or not provider.features.health_probe:
                continue
            waiting = [c for c in self._circuits.values() if _belongs(c, provider) and c.state == "open" and c.retry_after_s() == 0]
            last = self._probes.get(provider.id)
            if waiting or last is None or now - last.at >= interval:
                due.append(self._probe(provider, waiting, now))
        if due:
            await asyncio.gather(*due)

    async def _probe(self, provider: Provider, waiting: list[Circuit], now: float) -> None:
        try:
            health = await asyncio.wait_for(provider.probe(), PROBE_TIMEOUT_S)
            ok, reason = health.ok, health.reason
        except Exception as exc:  # a probe must never take the chore down
            ok, reason = False, type(exc).__name__
        self._probes[provider.id] = _Probe(at=now, ok=ok, reason=reason)
        for circuit in waiting:
            engine = circuit.name.partition("/")[2]
            engine_ok = ok and (not engine or provider.unavailable_reason(engine) is None)
            if engine_ok:
                circuit.half_open()
            else:
                circuit.reopen(f"probe failed: {reason}")
        if not ok:
            logger.info("probe of %s failed: %s", provider.id, reason)


def _belongs(circuit: Circuit, provider: Provider) -> bool:
    return circuit.name == provider.id or circuit.name.startswith(provider.id + "/")
