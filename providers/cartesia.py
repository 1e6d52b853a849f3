"""Cartesia: `POST {base}/tts/bytes` with `X-API-Key` and a pinned `Cartesia-Version`; streams the body."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from voxrouter.providers.base import PCM_SAMPLE_RATE, ErrorKind, ProviderError, ProviderFeatures, SynthesisRequest, Voice
from voxrouter.providers.remote import RemoteProvider, merge_options

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


def _page_items(page: Any) -> list[dict[str, Any]]:
    # Older API versions answer with a bare list and no pagination.
    items = page.get("data") if isinstance(page, dict) else page
    return [item for item in items if isinstance(item, dict) and item.get("id")] if isinstance(items, list) else []


# Cartesia's words for the gender label, in the catalog's (and the other providers') vocabulary.
_GENDERS = {"masculine": "male", "feminine": "female", "gender_neutral": "neutral"}


class CartesiaProvider(RemoteProvider):
    features = ProviderFeatures(voice_listing=True, health_probe=True)
    fixed_fields = frozenset({"model_id", "transcript", "voice", "output_format"})
    probe_path = "/voices"
    probe_params = {"limit": 1}
    parse_error = staticmethod(_parse_error)

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
        body = merge_options(body, request.provider_options)
        async for chunk in self._stream("/tts/bytes", json=body):
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

    def _voice(self, item: dict[str, Any]) -> Voice:
        gender = item.get("gender")
        gender = _GENDERS.get(gender, gender) if isinstance(gender, str) else None
        return Voice(
            id=str(item["id"]),
            provider=self.id,
            name=str(item.get("name") or item["id"]),
            language=str(item.get("language") or "en"),
            labels={"gender": gender} if isinstance(gender, str) and gender else {},
            model_compatibility=tuple(self._spec.models),
        )
