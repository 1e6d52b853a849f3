"""OpenAI: `POST {base}/audio/speech` with a bearer key; streams the body as it is produced."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from voxrouter.providers.base import ProviderFeatures, SynthesisRequest, Voice
from voxrouter.providers.remote import RemoteProvider, merge_options


def _parse_error(body: bytes) -> str:
    error = json.loads(body).get("error") or {}
    return str(error.get("message") or error.get("code") or "")


class OpenAIProvider(RemoteProvider):
    features = ProviderFeatures(voice_listing=False, health_probe=True)  # no voices API: the config lists them
    fixed_fields = frozenset({"model", "input", "voice", "response_format", "stream_format"})
    probe_path = "/models"
    parse_error = staticmethod(_parse_error)

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
        # OpenAI keeps a client's own id (X-Client-Request-Id) with the request, for its support.
        headers = {"X-Client-Request-Id": request.request_id} if request.request_id else None
        async for chunk in self._stream("/audio/speech", json=merge_options(body, request.provider_options), headers=headers):
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
