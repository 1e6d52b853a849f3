"""What every remote (HTTP) adapter shares: its client, key, capabilities from config,
a streaming call, a JSON GET and the free health probe. Subclasses speak the wire."""

from __future__ import annotations

import unicodedata
from typing import Any, AsyncIterator, ClassVar

import httpx

from voxrouter.providers._http import client_for, error_from_response, probe_get, stream_audio
from voxrouter.providers.base import Capabilities, ErrorKind, Health, ProviderDefaults, ProviderError, ProviderFeatures
from voxrouter.providers.spec import ProviderSpec


def merge_options(body: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Apply pass-through `provider_options`; a dict option merges into a dict the adapter set."""
    merged = dict(body)
    for key, value in options.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


class RemoteProvider(ProviderDefaults):
    features: ClassVar[ProviderFeatures]  # each adapter declares its own
    fixed_fields: frozenset[str] = frozenset()
    probe_path: str = "/"
    probe_params: dict[str, Any] | None = None

    def __init__(self, provider_id: str, spec: ProviderSpec, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.id = provider_id
        self.name = spec.name
        self.website = spec.website
        self._spec = spec
        self._api_key = spec.resolved_api_key()
        self._client = client_for(spec, transport)

    @staticmethod
    def parse_error(body: bytes) -> str:
        raise NotImplementedError

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    @property
    def configured(self) -> bool:
        return bool(self._api_key)

    def unavailable_reason(self, model: str) -> str | None:
        return None if self.configured else "missing_api_key"

    def capabilities(self, model: str) -> Capabilities:
        spec = self._spec.model(model) or self._spec.default_model
        return Capabilities(
            response_formats=tuple(spec.response_formats or self._spec.response_formats),
            max_input_chars=spec.max_input_chars,
            instructions=spec.instructions,
            fixed_fields=self.fixed_fields,
        )

    def spoken_characters(self, model: str, text: str) -> int:
        # Upstreams normalise compatibility characters (U+FDFA is 18 letters spoken).
        return max(len(text), len(unicodedata.normalize("NFKC", text)))

    def _stream(
        self, url: str, *, json: Any, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> AsyncIterator[bytes]:
        return stream_audio(
            self._client,
            self.id,
            "POST",
            url,
            headers={**self._headers(), **(headers or {})},
            params=params,
            json=json,
            parse_error=self.parse_error,
            first_byte_timeout_s=self._spec.first_byte_timeout_s,
        )

    async def _get_json(self, url: str, params: dict[str, Any] | None = None) -> Any:
        try:
            response = await self._client.get(url, headers=self._headers(), params=params)
        except httpx.TimeoutException:
            raise ProviderError(ErrorKind.timeout, f"{self.id} timed out on GET {url}", provider=self.id) from None
        except httpx.HTTPError as exc:
            raise ProviderError(
                ErrorKind.unavailable, f"{self.id} GET {url} failed: {type(exc).__name__}", provider=self.id
            ) from None
        if response.status_code >= 400:
            raise error_from_response(self.id, response, response.content, self.parse_error)
        try:
            return response.json()
        except ValueError:
            raise ProviderError(
                ErrorKind.unavailable, f"{self.id} answered GET {url} with invalid JSON", provider=self.id
            ) from None

    async def probe(self) -> Health:
        if not self.configured:
            return Health(ok=False, reason="missing_api_key")
        return await probe_get(self._client, self.id, self.probe_path, headers=self._headers(), params=self.probe_params)

    async def aclose(self) -> None:
        await self._client.aclose()


