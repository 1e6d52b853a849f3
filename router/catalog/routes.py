"""`GET /v1/providers`, `/v1/voices`, `/v1/status`, and the voice cache behind them."""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from voxrouter.providers.base import AUDIO_FORMATS, Provider, Voice
from voxrouter.router import schemas
from voxrouter.router.config import Config
from voxrouter.router.http.operation import ApiRoute, Operation
from voxrouter.router.limits import policy as limits
from voxrouter.router.resilience.health import HealthBoard
from voxrouter.router.schemas import ModelOut, ProviderOut, StatusOut, VoiceOut, VoicesResponse

logger = logging.getLogger("voxrouter.catalog")


class Catalog:
    def __init__(self, config: Config, providers: dict[str, Provider], health: HealthBoard) -> None:
        self._config = config
        self._providers = providers
        self._health = health
        self._voices: dict[str, tuple[float, list[Voice]]] = {}
        self._locks: dict[str, asyncio.Lock] = {pid: asyncio.Lock() for pid in providers}

    def providers(self) -> list[ProviderOut]:
        out = []
        for pid, provider in self._providers.items():
            spec = self._config.providers[pid]
            models = []
            for model_id, model in spec.models.items():
                native = provider.capabilities(model_id).response_formats
                formats = AUDIO_FORMATS if "pcm" in native else native
                models.append(
                    ModelOut(
                        id=model_id,
                        response_formats=list(formats),
                        max_input_chars=model.max_input_chars,
                        price_micros_per_1k_chars=model.price_micros_per_1k_chars,
                    )
                )
            out.append(ProviderOut(id=pid, name=provider.name, website=provider.website, models=models))
        return out

    def status(self) -> list[StatusOut]:
        out = []
        for provider in self._providers.values():
            if not provider.features.per_model_engines:
                state, reason = self._health.state(provider)
                out.append(StatusOut(id=provider.id, state=state, reason=reason))  # type: ignore[arg-type]
                continue
            for engine_id, _ in provider.engine_states():  # local engines: one line each
                state, reason = self._health.state(provider, engine_id)
                out.append(StatusOut(id=f"{provider.id}/{engine_id}", state=state, reason=reason))  # type: ignore[arg-type]
        return out

    async def voices(
        self, providers: list[str] | None = None, language: str | None = None, gender: str | None = None
    ) -> list[Voice]:
        ids = [pid for pid in self._providers if providers is None or pid in providers]
        lists = await asyncio.gather(*(self._provider_voices(pid) for pid in ids))
        merged = [voice for voices in lists for voice in voices]
        if language:
            merged = [v for v in merged if v.language.lower().startswith(language.lower())]
        if gender:
            merged = [v for v in merged if v.labels.get("gender", "").lower() == gender.lower()]
        return merged

    async def _provider_voices(self, provider_id: str) -> list[Voice]:
        ttl = self._config.catalog.voices_ttl_s
        async with self._locks[provider_id]:  # one upstream listing at a time per provider
            cached = self._voices.get(provider_id)
            if cached and time.monotonic() - cached[0] < ttl:
                return cached[1]
            provider = self._providers[provider_id]
            if not provider.configured:
                return []
            try:
                voices = await provider.voices()
            except Exception as exc:
                logger.warning("voice listing from %s failed: %s", provider_id, exc)
                return cached[1] if cached else []  # a stale list beats none
            self._voices[provider_id] = (time.monotonic(), voices)
            return voices


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


async def list_providers(request: Request) -> Response:
    gateway = request.app.state.gateway
    await limits.counted(request, await gateway.auth.api_key(request))
    return JSONResponse([p.model_dump(mode="json") for p in gateway.catalog.providers()])


async def list_voices(request: Request) -> Response:
    gateway = request.app.state.gateway
    await limits.counted(request, await gateway.auth.api_key(request))
    query = request.query_params
    voices = await gateway.catalog.voices(_csv(query.get("provider")), query.get("language"), query.get("gender"))
    body = VoicesResponse(
        voices=[
            VoiceOut(
                id=v.id,
                provider=v.provider,
                name=v.name,
                language=v.language,
                labels=v.labels,
                preview_url=v.preview_url,
                model_compatibility=list(v.model_compatibility),
            )
            for v in voices
        ]
    )
    return JSONResponse(body.model_dump(mode="json", exclude_none=True))


async def provider_status(request: Request) -> Response:
    gateway = request.app.state.gateway
    await limits.counted(request, await gateway.auth.api_key(request))
    return JSONResponse([s.model_dump(mode="json", exclude_none=True) for s in gateway.catalog.status()])


ROUTES = [
    ApiRoute("/v1/providers", list_providers, method="GET", operation=Operation(
        "listProviders", "Routable providers and their models.", ("array", schemas.ProviderOut)
    )),
    ApiRoute("/v1/voices", list_voices, method="GET", operation=Operation(
        "listVoices",
        "The voice catalog merged across providers.",
        schemas.VoicesResponse,
        query=(
            {"name": "provider", "in": "query", "required": False, "schema": {"type": "string"}, "description": "Comma-separated provider ids."},
            {"name": "language", "in": "query", "required": False, "schema": {"type": "string"}, "description": "Case-insensitive language prefix."},
            {"name": "gender", "in": "query", "required": False, "schema": {"type": "string"}, "description": "Exact gender label, case-insensitive."},
        ),
    )),
    ApiRoute("/v1/status", provider_status, method="GET", operation=Operation(
        "providerStatus", "Live health per provider.", ("array", schemas.StatusOut)
    )),
]
