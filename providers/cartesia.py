"""Cartesia: `POST {base}/tts/bytes` with `X-API-Key` and a pinned `Cartesia-Version`; streams the body."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

import httpx

from providers._http import build_client, error_from_response, probe_get, stream_audio
from providers.base import PCM_SAMPLE_RATE, Capabilities, ErrorKind, Health, ProviderError, SynthesisRequest, Voice
from router.config import ProviderSpec

DEFAULT_API_VERSION = "2024-11-13"
DEFAULT_MP3_BIT_RATE = 128_000
MP3_SAMPLE_RATE = 44_100
VOICES_PAGE_SIZE = 100
MAX_VOICE_PAGES = 20  # a bound on a listing that keeps saying has_more
_MAX_ERROR_TEXT = 300


def _parse_error(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        parts = [str(payload[k]) for k in ("error", "message") if isinstance(payload.get(k), str) and payload[k]]
        if parts:
            return ": ".join(parts)[:_MAX_ERROR_TEXT]
    return text[:_MAX_ERROR_TEXT]


def _merged(body: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Apply pass-through options; a dict option merges into a dict the adapter already set."""
    merged = dict(body)
    for key, value in options.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _page_items(page: Any) -> list[dict[str, Any]]:
    # Older API versions answer with a bare list and no pagination.
    items = page.get("data") if isinstance(page, dict) else page
    return [item for item in items if isinstance(item, dict) and item.get("id")] if isinstance(items, list) else []


class CartesiaProvider:
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
        return {
            "X-API-Key": self._api_key or "",
            "Cartesia-Version": str(self._spec.options.get("api_version") or DEFAULT_API_VERSION),
        }

    def _output_format(self, response_format: str) -> dict[str, Any]:
        if response_format == "pcm":
            return {"container": "raw", "encoding": "pcm_s16le", "sample_rate": PCM_SAMPLE_RATE}
        if response_format == "mp3":
            bit_rate = self._spec.options.get("mp3_bit_rate") or DEFAULT_MP3_BIT_RATE
            return {"container": "mp3", "bit_rate": int(bit_rate), "sample_rate": MP3_SAMPLE_RATE}
        raise ProviderError(
            ErrorKind.bad_request, f"{self.id} cannot produce {response_format!r} natively", provider=self.id
        )

    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[bytes]:
        body: dict[str, Any] = {
            "model_id": request.model,
            "transcript": request.input,
            "voice": {"mode": "id", "id": request.voice},
            "output_format": self._output_format(request.response_format),
        }
        if request.speed is not None:
            body["generation_config"] = {"speed": request.speed}
        body = _merged(body, request.provider_options)
        async for chunk in stream_audio(
            self._client,
            self.id,
            "POST",
            "/tts/bytes",
            headers=self._headers(),
            json=body,
            parse_error=_parse_error,
            first_byte_timeout_s=self._spec.first_byte_timeout_s,
        ):
            yield chunk

    async def voices(self) -> list[Voice]:
        if not self.configured:
            return []
        voices: list[Voice] = []
        params: dict[str, Any] = {"limit": VOICES_PAGE_SIZE}
        for _ in range(MAX_VOICE_PAGES):
            page = await self._get_json("/voices", params)
            items = _page_items(page)
            voices.extend(self._voice(item) for item in items)
            if not (isinstance(page, dict) and page.get("has_more") and items):
                break
            params = {"limit": VOICES_PAGE_SIZE, "starting_after": items[-1]["id"]}
        return voices

    async def _get_json(self, url: str, params: dict[str, Any]) -> Any:
        try:
            response = await self._client.get(url, headers=self._headers(), params=params)
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
        gender = item.get("gender")
        return Voice(
            id=str(item["id"]),
            provider=self.id,
            name=str(item.get("name") or item["id"]),
            language=str(item.get("language") or "en"),
            labels={"gender": gender} if isinstance(gender, str) and gender else {},
            model_compatibility=tuple(self._spec.models),
        )

    async def probe(self) -> Health:
        if not self.configured:
            return Health(ok=False, reason="missing_api_key")
        return await probe_get(self._client, self.id, "/voices", headers=self._headers(), params={"limit": 1})

    async def aclose(self) -> None:
        await self._client.aclose()
