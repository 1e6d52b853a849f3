"""OpenAI: `POST {base}/audio/speech` with a bearer key; streams the body as it is produced."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

import httpx

from providers._http import build_client, probe_get, stream_audio
from providers.base import Capabilities, Health, SynthesisRequest, Voice
from router.config import ProviderSpec


def _parse_error(body: bytes) -> str:
    error = json.loads(body).get("error") or {}
    return str(error.get("message") or error.get("code") or "")


class OpenAIProvider:
    def __init__(self, provider_id: str, spec: ProviderSpec, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.id = provider_id
        self.name = spec.name
        self.website = spec.website
        self._spec = spec
        self._api_key = spec.resolved_api_key()
        self._client = build_client(
            spec.resolved_base_url(),
            connect_timeout_s=spec.connect_timeout_s,
            read_timeout_s=spec.read_timeout_s,
            max_connections=spec.max_connections,
            transport=transport,
        )

    @property
    def configured(self) -> bool:
        return bool(self._api_key)

    def capabilities(self, model: str) -> Capabilities:
        spec = self._spec.model(model) or self._spec.default_model
        return Capabilities(
            response_formats=tuple(spec.response_formats or self._spec.response_formats),
            max_input_chars=spec.max_input_chars,
            instructions=spec.instructions,
        )

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}", "Accept": "application/octet-stream"}

    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[bytes]:
        body: dict[str, Any] = {
            "model": request.model,
            "input": request.input,
            "voice": request.voice,
            "response_format": request.response_format,
        }
        if request.speed is not None:
            body["speed"] = request.speed
        if request.instructions:
            body["instructions"] = request.instructions
        body.update(request.provider_options)
        async for chunk in stream_audio(
            self._client,
            self.id,
            "POST",
            "/audio/speech",
            headers=self._headers(),
            json=body,
            parse_error=_parse_error,
            first_byte_timeout_s=self._spec.first_byte_timeout_s,
        ):
            yield chunk

    async def voices(self) -> list[Voice]:
        # OpenAI has no voices API; the catalog is configuration.
        compatible = tuple(self._spec.models)
        return [
            Voice(
                id=v.id,
                provider=self.id,
                name=v.name,
                language=v.language,
                labels={**v.labels, **({"gender": v.gender} if v.gender else {})},
                model_compatibility=compatible,
            )
            for v in self._spec.voices
        ]

    async def probe(self) -> Health:
        if not self.configured:
            return Health(ok=False, reason="missing_api_key")
        return await probe_get(self._client, self.id, "/models", headers=self._headers())

    async def aclose(self) -> None:
        await self._client.aclose()
