"""ElevenLabs: `POST {base}/v1/text-to-speech/{voice_id}/stream` with an `xi-api-key`; streams the body."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator
from urllib.parse import quote

import httpx

from providers._http import build_client, error_from_response, probe_get, stream_audio
from providers.base import Capabilities, ErrorKind, Health, ProviderError, SynthesisRequest, Voice
from router.config import ProviderSpec

DEFAULT_MP3_FORMAT = "mp3_44100_128"
PCM_FORMAT = "pcm_24000"  # matches base.PCM_SAMPLE_RATE: raw 16-bit LE mono


def _parse_error(body: bytes) -> str:
    detail = json.loads(body).get("detail")
    if isinstance(detail, list):  # 422: FastAPI-style validation errors
        return "; ".join(str(item.get("msg", "")) for item in detail if isinstance(item, dict))
    if isinstance(detail, dict):
        return str(detail.get("message") or detail.get("status") or "")
    return str(detail or "")


def _merged(body: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Apply pass-through options; a dict option merges into a dict the adapter already set."""
    merged = dict(body)
    for key, value in options.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _language(item: dict[str, Any], labels: dict[str, Any]) -> str:
    for entry in item.get("verified_languages") or []:
        if isinstance(entry, dict) and (entry.get("locale") or entry.get("language")):
            return str(entry.get("locale") or entry.get("language"))
    return str(labels.get("language") or "en")


def _model_ids(item: dict[str, Any]) -> tuple[str, ...]:
    ids = [e.get("model_id") for e in item.get("verified_languages") or [] if isinstance(e, dict)]
    return tuple(dict.fromkeys(str(i) for i in ids if i))


class ElevenLabsProvider:
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
        body: dict[str, Any] = {"text": request.input, "model_id": request.model}
        if request.speed is not None:
            body["voice_settings"] = {"speed": request.speed}
        body = _merged(body, request.provider_options)
        async for chunk in stream_audio(
            self._client,
            self.id,
            "POST",
            f"/v1/text-to-speech/{quote(request.voice, safe='')}/stream",
            headers=self._headers(),
            params=params,
            json=body,
            parse_error=_parse_error,
            first_byte_timeout_s=self._spec.first_byte_timeout_s,
        ):
            yield chunk

    async def voices(self) -> list[Voice]:
        if not self.configured:
            return []
        listing = await self._get_json("/v1/voices")
        items = listing.get("voices") if isinstance(listing, dict) else None
        return [self._voice(item) for item in items or [] if isinstance(item, dict) and item.get("voice_id")]

    async def _get_json(self, url: str) -> Any:
        try:
            response = await self._client.get(url, headers=self._headers())
        except httpx.TimeoutException:
            raise ProviderError(ErrorKind.timeout, f"{self.id} timed out on GET {url}", provider=self.id) from None
        except httpx.HTTPError as exc:
            raise ProviderError(
                ErrorKind.unavailable, f"{self.id} GET {url} failed: {type(exc).__name__}", provider=self.id
            ) from None
        if response.status_code >= 400:
            raise error_from_response(self.id, response, response.content, _parse_error)
        try:
            return response.json()
        except ValueError:
            raise ProviderError(
                ErrorKind.unavailable, f"{self.id} answered GET {url} with invalid JSON", provider=self.id
            ) from None

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

    async def probe(self) -> Health:
        if not self.configured:
            return Health(ok=False, reason="missing_api_key")
        return await probe_get(self._client, self.id, "/v1/models", headers=self._headers())

    async def aclose(self) -> None:
        await self._client.aclose()
