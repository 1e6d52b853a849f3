"""ElevenLabs: `POST {base}/v1/text-to-speech/{voice_id}/stream` with an `xi-api-key`; streams the body."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from voxrouter.providers._http import path_segment
from voxrouter.providers.base import ErrorKind, ProviderError, ProviderFeatures, SynthesisRequest, Voice
from voxrouter.providers.remote import RemoteProvider, merge_options

DEFAULT_MP3_FORMAT = "mp3_44100_128"
PCM_FORMAT = "pcm_24000"  # matches base.PCM_SAMPLE_RATE: raw 16-bit LE mono


def _parse_error(body: bytes) -> str:
    detail = json.loads(body).get("detail")
    if isinstance(detail, list):  # 422: FastAPI-style validation errors
        return "; ".join(str(item.get("msg", "")) for item in detail if isinstance(item, dict))
    if isinstance(detail, dict):
        return str(detail.get("message") or detail.get("status") or "")
    return str(detail or "")


def _language(item: dict[str, Any], labels: dict[str, Any]) -> str:
    for entry in item.get("verified_languages") or []:
        if isinstance(entry, dict) and (entry.get("locale") or entry.get("language")):
            return str(entry.get("locale") or entry.get("language"))
    return str(labels.get("language") or "en")


def _model_ids(item: dict[str, Any]) -> tuple[str, ...]:
    ids = [e.get("model_id") for e in item.get("verified_languages") or [] if isinstance(e, dict)]
    return tuple(dict.fromkeys(str(i) for i in ids if i))


class ElevenLabsProvider(RemoteProvider):
    features = ProviderFeatures(voice_listing=True, health_probe=True)
    fixed_fields = frozenset({"text", "model_id"})
    probe_path = "/v1/models"
    parse_error = staticmethod(_parse_error)

    def _headers(self) -> dict[str, str]:
        return {"xi-api-key": self._api_key or ""}

    def _params(self, response_format: str) -> dict[str, Any]:
        options = self._spec.options
        if response_format == "mp3":
            params: dict[str, Any] = {"output_format": options.get("mp3_output_format") or DEFAULT_MP3_FORMAT}
        elif response_format == "pcm":
            params = {"output_format": PCM_FORMAT}
        else:
            raise ProviderError(
                ErrorKind.bad_request, f"{self.id} cannot produce {response_format!r} natively", provider=self.id
            )
        if options.get("optimize_streaming_latency") is not None:
            params["optimize_streaming_latency"] = options["optimize_streaming_latency"]
        return params

    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[bytes]:
        params = self._params(request.response_format)
        voice = path_segment(request.voice, provider=self.id, field="voice")
        body: dict[str, Any] = {"text": request.input, "model_id": request.model}
        if request.speed is not None:
            body["voice_settings"] = {"speed": request.speed}
        body = merge_options(body, request.provider_options)
        url = f"/v1/text-to-speech/{voice}/stream"
        async for chunk in self._stream(url, params=params, json=body):
            yield chunk

    async def voices(self) -> list[Voice]:
        if not self.configured:
            return []
        listing = await self._get_json("/v1/voices")
        items = listing.get("voices") if isinstance(listing, dict) else None
        return [self._voice(item) for item in items or [] if isinstance(item, dict) and item.get("voice_id")]

    def _voice(self, item: dict[str, Any]) -> Voice:
        raw_labels = item.get("labels") if isinstance(item.get("labels"), dict) else {}
        return Voice(
            id=str(item["voice_id"]),
            provider=self.id,
            name=str(item.get("name") or item["voice_id"]),
            language=_language(item, raw_labels),
            labels={k: v for k, v in raw_labels.items() if isinstance(v, str)},
            preview_url=item.get("preview_url") or None,
            model_compatibility=_model_ids(item) or tuple(self._spec.models),
        )
