"""A typed Python client for every VoxRouter route: `Client` (sync) and `AsyncClient`.

Both build their requests with the same `_Call` builders and read responses with the same
`_result`, so a route is described once. Methods return the wire JSON unchanged (typed as
TypedDicts); any non-2xx answer or network failure raises `VoxRouterError`.

    with Client(token=os.environ["VOXROUTER_API_KEY"]) as vox:
        with vox.speech("Hello", voice="alloy", model="openai/tts-1") as audio:
            print(audio.provider)
            for chunk in audio.iter_bytes():
                ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import uuid
from typing import Any, AsyncIterator, Generic, Iterator, Literal, Mapping, NotRequired, Sequence, TypedDict, TypeVar, cast
from urllib.parse import quote

import httpx

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


def _version() -> str:
    try:
        return importlib.metadata.version("voxrouter")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


__version__ = _version()
USER_AGENT = f"voxrouter-cli/{__version__}"

T = TypeVar("T")
AudioFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
AUDIO_FORMATS: tuple[AudioFormat, ...] = ("mp3", "opus", "aac", "flac", "wav", "pcm")


class VoxRouterError(Exception):
    """A non-2xx answer (`status`, the wire's `error` code and `details`), or status 0 with
    code `connection_error` when the gateway could not be reached."""

    def __init__(self, status: int, code: str, details: str, *, retry_after: str | None = None) -> None:
        super().__init__(status, code, details)
        self.status = status
        self.code = code
        self.details = details
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"Error {self.status} {self.code} - {self.details}"


# --- wire shapes ----------------------------------------------------------------------------


class Voice(TypedDict):
    id: str
    provider: str
    name: str
    language: str
    labels: dict[str, str]
    preview_url: NotRequired[str]
    model_compatibility: list[str]


class VoicesResponse(TypedDict):
    voices: list[Voice]


class Model(TypedDict):
    id: str
    response_formats: list[str]
    max_input_chars: int
    price_micros_per_1k_chars: int


class Provider(TypedDict):
    id: str
    name: str
    website: str
    models: list[Model]


class ProviderStatus(TypedDict):
    id: str
    state: Literal["available", "degraded", "unavailable"]
    reason: NotRequired[str]


Credits = TypedDict("Credits", {"balanceMicros": int, "reservedMicros": int})
Activity = TypedDict(
    "Activity", {"createdAt": str, "kind": str, "microsDelta": int, "microsBalanceAfter": int, "source": str}
)
UsageTotals = TypedDict("UsageTotals", {"requests": int, "costMicros": int, "errorCount": int})
ProviderUsage = TypedDict("ProviderUsage", {"provider": str, "requests": int, "costMicros": int})


class ErrorCodeCount(TypedDict):
    code: str
    count: int


RecentUsage = TypedDict(
    "RecentUsage",
    {
        "createdAt": str,
        "status": int | None,
        "provider": str | None,
        "model": str | None,
        "costMicros": int,
        "code": str | None,
        "requestId": str | None,
        "kind": str,  # "speech" or "transcription"
    },
)
Usage = TypedDict(
    "Usage", {"totals": UsageTotals, "byProvider": list[ProviderUsage], "byErrorCode": list[ErrorCodeCount], "recent": list[RecentUsage]}
)


class Session(TypedDict):
    session_token: str
    expires_at: str
    user_id: str


class Registered(Session):
    org_id: str


class DeviceCode(TypedDict):
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int


class DeviceDecision(TypedDict):
    user_code: str
    state: Literal["approved", "denied"]


class WhoAmI(TypedDict):
    user_id: str | None
    auth: Literal["api_key", "session"]
    expires_at: NotRequired[str | None]
    org_id: str
    email: NotRequired[str | None]


class LogoutResult(TypedDict):
    revoked: bool


Key = TypedDict(
    "Key",
    {
        "id": str,
        "name": str,
        "keySuffix": str,
        "maxConcurrency": int | None,
        "createdAt": str,
        "lastUsedAt": str | None,
        "dailyLimitMicros": NotRequired[int | None],
        "monthlyLimitMicros": NotRequired[int | None],
        "createdBy": NotRequired[str | None],
        "requestsPerMinute": NotRequired[int | None],
        "charactersPerMinute": NotRequired[int | None],
    },
)


class CreatedKey(TypedDict):
    key: Key
    secret: str


class RevokedKey(TypedDict):
    id: str
    revoked: bool


PaymentMethod = TypedDict("PaymentMethod", {"id": str, "brand": str, "last4": str, "expMonth": int, "expYear": int})


class Topup(TypedDict):
    payment_intent_id: str
    status: str  # succeeded or processing; the webhook credits the wallet once it succeeds


Checkout = TypedDict("Checkout", {"id": str, "url": str, "amountCents": int, "bonusPercent": int, "creditMicros": int})


TranscriptFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]


# --- requests and responses, shared by both clients -------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Call(Generic[T]):
    """One request to make; `T` is what its 2xx body is."""

    method: str
    path: str
    params: Mapping[str, str | int] | None = None
    json: Any = None
    authenticated: bool = True  # False: sign-up and the device flow take no token
    files: Mapping[str, Any] | None = None  # a multipart form's files (transcriptions) ...
    data: Mapping[str, Any] | None = None  # ... and its other fields
    text: bool = False  # the 2xx body is text (transcripts as text, srt or vtt), not JSON


def _query(**values: str | int | None) -> dict[str, str | int]:
    return {name: value for name, value in values.items() if value is not None}


def _body(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


def _csv(value: str | Sequence[str] | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return ",".join(value)


class _Calls:
    """Every route of router/http/app.py ROUTES a client calls (the Stripe webhook is Stripe's)."""

    @staticmethod
    def voices(provider: str | Sequence[str] | None, language: str | None, gender: str | None) -> _Call[VoicesResponse]:
        return _Call("GET", "/v1/voices", _query(provider=_csv(provider), language=language, gender=gender))

    @staticmethod
    def providers() -> _Call[list[Provider]]:
        return _Call("GET", "/v1/providers")

    @staticmethod
    def status() -> _Call[list[ProviderStatus]]:
        return _Call("GET", "/v1/status")

    @staticmethod
    def credits() -> _Call[Credits]:
        return _Call("GET", "/v1/credits")

    @staticmethod
    def activity(limit: int | None) -> _Call[list[Activity]]:
        return _Call("GET", "/v1/credits/activity", _query(limit=limit))

    @staticmethod
    def usage(days: int | None, limit: int | None) -> _Call[Usage]:
        return _Call("GET", "/v1/usage", _query(days=days, limit=limit))

    @staticmethod
    def register(email: str, password: str, organization: str | None) -> _Call[Registered]:
        return _Call("POST", "/v1/auth/register", json=_body(email=email, password=password, organization=organization), authenticated=False)

    @staticmethod
    def login(email: str, password: str) -> _Call[Session]:
        return _Call("POST", "/v1/auth/login", json={"email": email, "password": password}, authenticated=False)

    @staticmethod
    def device_code() -> _Call[DeviceCode]:
        return _Call("POST", "/v1/auth/device-code", authenticated=False)

    @staticmethod
    def poll(device_code: str) -> _Call[Session]:
        return _Call("POST", "/v1/auth/poll", json={"device_code": device_code}, authenticated=False)

    @staticmethod
    def approve_device(user_code: str, approve: bool) -> _Call[DeviceDecision]:
        return _Call("POST", "/v1/auth/device/approve", json={"user_code": user_code, "approve": approve})

    @staticmethod
    def whoami() -> _Call[WhoAmI]:
        return _Call("GET", "/v1/auth/whoami")

    @staticmethod
    def logout() -> _Call[LogoutResult]:
        return _Call("POST", "/v1/auth/logout")

    @staticmethod
    def list_keys() -> _Call[list[Key]]:
        return _Call("GET", "/v1/keys")

    @staticmethod
    def create_key(
        name: str,
        max_concurrency: int | None,
        daily_limit_micros: int | None,
        monthly_limit_micros: int | None,
        requests_per_minute: int | None,
        characters_per_minute: int | None,
    ) -> _Call[CreatedKey]:
        body = _body(
            name=name,
            maxConcurrency=max_concurrency,
            dailyLimitMicros=daily_limit_micros,
            monthlyLimitMicros=monthly_limit_micros,
            requestsPerMinute=requests_per_minute,
            charactersPerMinute=characters_per_minute,
        )
        return _Call("POST", "/v1/keys", json=body)

    @staticmethod
    def delete_key(key_id: str) -> _Call[RevokedKey]:
        return _Call("DELETE", f"/v1/keys/{quote(key_id, safe='')}")

    @staticmethod
    def billing_methods() -> _Call[list[PaymentMethod]]:
        return _Call("GET", "/v1/billing/methods")

    @staticmethod
    def billing_topup(amount_cents: int, payment_method_id: str, idempotency_key: str | None) -> _Call[Topup]:
        body = {"amountCents": amount_cents, "paymentMethodId": payment_method_id, "idempotencyKey": idempotency_key or str(uuid.uuid4())}
        return _Call("POST", "/v1/billing/topup", json=body)

    @staticmethod
    def billing_checkout(amount_cents: int) -> _Call[Checkout]:
        return _Call("POST", "/v1/billing/checkout", json={"amountCents": amount_cents})

    @staticmethod
    def transcribe(
        route: Literal["transcriptions", "translations"],
        audio: bytes,
        filename: str,
        model: str,
        fields: Mapping[str, Any],
    ) -> _Call[Any]:
        data: dict[str, Any] = {"model": model, **{name: str(value) for name, value in fields.items() if value is not None}}
        granularities = data.pop("timestamp_granularities", None)
        if granularities:
            data["timestamp_granularities[]"] = granularities.split(",")
        text = data.get("response_format") in ("text", "srt", "vtt")
        return _Call("POST", f"/v1/audio/{route}", files={"file": (filename, audio)}, data=data, text=text)

    @staticmethod
    def speech(
        text: str,
        voice: str,
        model: str,
        response_format: AudioFormat | None,
        provider_options: Mapping[str, Any] | None,
        speed: float | None,
        instructions: str | None,
        models: Sequence[str] | None,
    ) -> _Call[bytes]:
        body = _body(
            model=model,
            input=text,
            voice=voice,
            response_format=response_format,
            speed=speed,
            instructions=instructions,
            provider_options=dict(provider_options) if provider_options is not None else None,
            models=list(models) if models else None,
        )
        return _Call("POST", "/v1/audio/speech", json=body)


def _error(response: httpx.Response) -> VoxRouterError:
    """The wire's `{"error", "details"}`, or what can be said about a body that is not one
    (a proxy's HTML page, say)."""
    retry_after = response.headers.get("retry-after")
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        details = body.get("details")
        return VoxRouterError(response.status_code, body["error"], details if isinstance(details, str) else "", retry_after=retry_after)
    text = " ".join(response.text.split())[:200] or response.reason_phrase
    return VoxRouterError(response.status_code, "http_error", text, retry_after=retry_after)


def _result(response: httpx.Response, text: bool = False) -> Any:
    if response.is_error:
        raise _error(response)
    if text:
        return response.text
    try:
        return response.json()
    except ValueError:
        raise VoxRouterError(response.status_code, "invalid_response", f"expected JSON from {response.request.url}") from None


def _network_error(exc: httpx.TransportError, base_url: str) -> VoxRouterError:
    if isinstance(exc, httpx.TimeoutException):
        return VoxRouterError(0, "connection_error", f"timed out talking to {base_url}")
    if isinstance(exc, (httpx.ConnectError, httpx.UnsupportedProtocol)):
        return VoxRouterError(0, "connection_error", f"could not reach {base_url}")
    return VoxRouterError(0, "connection_error", f"{base_url}: {type(exc).__name__}: {exc}")


def _headers(token: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


class _Base:
    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    def _build(self, http: httpx.Client | httpx.AsyncClient, call: _Call[Any]) -> httpx.Request:
        request = http.build_request(call.method, call.path, params=call.params, json=call.json, files=call.files, data=call.data)
        # The token rides in the client's default headers; sign-up and the device flow must not get it.
        if not call.authenticated:
            request.headers.pop("Authorization", None)
        return request


class SpeechStream:
    """An audio response being received: who served it, and its bytes as they arrive."""

    def __init__(self, response: httpx.Response, base_url: str) -> None:
        self.response = response
        self._base_url = base_url

    @property
    def provider(self) -> str | None:
        return self.response.headers.get("x-voxrouter-provider")

    @property
    def model(self) -> str | None:
        return self.response.headers.get("x-voxrouter-model")

    @property
    def content_type(self) -> str | None:
        return self.response.headers.get("content-type")

    @property
    def request_id(self) -> str | None:
        return self.response.headers.get("x-request-id")

    def iter_bytes(self) -> Iterator[bytes]:
        try:
            yield from self.response.iter_bytes()
        except httpx.TransportError as exc:
            raise _network_error(exc, self._base_url) from exc

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.response.aiter_bytes():
                yield chunk
        except httpx.TransportError as exc:
            raise _network_error(exc, self._base_url) from exc


class Client(_Base):
    """Synchronous client. `token` is an API key (`pk_...`) or a session (`vr_session_...`)."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        token: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token)
        self._http = httpx.Client(base_url=self.base_url, headers=_headers(token), timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, call: _Call[T]) -> T:
        try:
            response = self._http.send(self._build(self._http, call))
        except httpx.TransportError as exc:
            raise _network_error(exc, self.base_url) from exc
        return cast(T, _result(response, call.text))

    @contextlib.contextmanager
    def speech(
        self,
        text: str,
        *,
        voice: str,
        model: str,
        response_format: AudioFormat | None = None,
        provider_options: Mapping[str, Any] | None = None,
        speed: float | None = None,
        instructions: str | None = None,
        models: Sequence[str] | None = None,
    ) -> Iterator[SpeechStream]:
        """`POST /v1/audio/speech`, streamed; leaving the block closes the connection, which
        makes the gateway cancel the upstream request."""
        call = _Calls.speech(text, voice, model, response_format, provider_options, speed, instructions, models)
        try:
            response = self._http.send(self._build(self._http, call), stream=True)
        except httpx.TransportError as exc:
            raise _network_error(exc, self.base_url) from exc
        try:
            if response.is_error:
                try:
                    response.read()
                except httpx.TransportError as exc:
                    raise _network_error(exc, self.base_url) from exc
                raise _error(response)
            yield SpeechStream(response, self.base_url)
        finally:
            response.close()

    def voices(
        self, *, provider: str | Sequence[str] | None = None, language: str | None = None, gender: str | None = None
    ) -> VoicesResponse:
        return self._run(_Calls.voices(provider, language, gender))

    def providers(self) -> list[Provider]:
        return self._run(_Calls.providers())

    def status(self) -> list[ProviderStatus]:
        return self._run(_Calls.status())

    def credits(self) -> Credits:
        return self._run(_Calls.credits())

    def activity(self, *, limit: int | None = None) -> list[Activity]:
        return self._run(_Calls.activity(limit))

    def usage(self, *, days: int | None = None, limit: int | None = None) -> Usage:
        return self._run(_Calls.usage(days, limit))

    def register(self, email: str, password: str, *, organization: str | None = None) -> Registered:
        return self._run(_Calls.register(email, password, organization))

    def login(self, email: str, password: str) -> Session:
        return self._run(_Calls.login(email, password))

    def device_code(self) -> DeviceCode:
        return self._run(_Calls.device_code())

    def poll(self, device_code: str) -> Session:
        """The session once approved; until then VoxRouterError with an RFC 8628 code."""
        return self._run(_Calls.poll(device_code))

    def approve_device(self, user_code: str, *, approve: bool = True) -> DeviceDecision:
        return self._run(_Calls.approve_device(user_code, approve))

    def whoami(self) -> WhoAmI:
        return self._run(_Calls.whoami())

    def logout(self) -> LogoutResult:
        return self._run(_Calls.logout())

    def list_keys(self) -> list[Key]:
        return self._run(_Calls.list_keys())

    def create_key(
        self,
        name: str,
        *,
        max_concurrency: int | None = None,
        daily_limit_micros: int | None = None,
        monthly_limit_micros: int | None = None,
        requests_per_minute: int | None = None,
        characters_per_minute: int | None = None,
    ) -> CreatedKey:
        return self._run(
            _Calls.create_key(name, max_concurrency, daily_limit_micros, monthly_limit_micros, requests_per_minute, characters_per_minute)
        )

    def delete_key(self, key_id: str) -> RevokedKey:
        return self._run(_Calls.delete_key(key_id))

    def transcribe(
        self,
        audio: bytes,
        *,
        filename: str = "audio.wav",
        model: str = "whisper-1",
        language: str | None = None,
        prompt: str | None = None,
        response_format: TranscriptFormat | None = None,
        temperature: float | None = None,
        timestamp_granularities: Sequence[Literal["word", "segment"]] | None = None,
    ) -> Any:
        """`POST /v1/audio/transcriptions`: a dict for json/verbose_json, a str for text/srt/vtt."""
        fields = {"language": language, "prompt": prompt, "response_format": response_format, "temperature": temperature,
                  "timestamp_granularities": _csv(timestamp_granularities)}
        return self._run(_Calls.transcribe("transcriptions", audio, filename, model, fields))

    def translate(
        self, audio: bytes, *, filename: str = "audio.wav", model: str = "whisper-1", prompt: str | None = None,
        response_format: TranscriptFormat | None = None, temperature: float | None = None,
    ) -> Any:
        """`POST /v1/audio/translations`: the speech, in English."""
        fields = {"prompt": prompt, "response_format": response_format, "temperature": temperature}
        return self._run(_Calls.transcribe("translations", audio, filename, model, fields))

    def billing_methods(self) -> list[PaymentMethod]:
        return self._run(_Calls.billing_methods())

    def billing_topup(self, amount_cents: int, payment_method_id: str, *, idempotency_key: str | None = None) -> Topup:
        """Charge a saved card; pass the same `idempotency_key` when retrying one attempt."""
        return self._run(_Calls.billing_topup(amount_cents, payment_method_id, idempotency_key))

    def billing_checkout(self, amount_cents: int) -> Checkout:
        return self._run(_Calls.billing_checkout(amount_cents))


class AsyncClient(_Base):
    """The same methods as `Client`, awaited; `speech` is an async context manager."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        token: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=_headers(token), timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self, call: _Call[T]) -> T:
        try:
            response = await self._http.send(self._build(self._http, call))
        except httpx.TransportError as exc:
            raise _network_error(exc, self.base_url) from exc
        return cast(T, _result(response, call.text))

    @contextlib.asynccontextmanager
    async def speech(
        self,
        text: str,
        *,
        voice: str,
        model: str,
        response_format: AudioFormat | None = None,
        provider_options: Mapping[str, Any] | None = None,
        speed: float | None = None,
        instructions: str | None = None,
        models: Sequence[str] | None = None,
    ) -> AsyncIterator[SpeechStream]:
        call = _Calls.speech(text, voice, model, response_format, provider_options, speed, instructions, models)
        try:
            response = await self._http.send(self._build(self._http, call), stream=True)
        except httpx.TransportError as exc:
            raise _network_error(exc, self.base_url) from exc
        try:
            if response.is_error:
                try:
                    await response.aread()
                except httpx.TransportError as exc:
                    raise _network_error(exc, self.base_url) from exc
                raise _error(response)
            yield SpeechStream(response, self.base_url)
        finally:
            await response.aclose()

    async def voices(
        self, *, provider: str | Sequence[str] | None = None, language: str | None = None, gender: str | None = None
    ) -> VoicesResponse:
        return await self._run(_Calls.voices(provider, language, gender))

    async def providers(self) -> list[Provider]:
        return await self._run(_Calls.providers())

    async def status(self) -> list[ProviderStatus]:
        return await self._run(_Calls.status())

    async def credits(self) -> Credits:
        return await self._run(_Calls.credits())

    async def activity(self, *, limit: int | None = None) -> list[Activity]:
        return await self._run(_Calls.activity(limit))

    async def usage(self, *, days: int | None = None, limit: int | None = None) -> Usage:
        return await self._run(_Calls.usage(days, limit))

    async def register(self, email: str, password: str, *, organization: str | None = None) -> Registered:
        return await self._run(_Calls.register(email, password, organization))

    async def login(self, email: str, password: str) -> Session:
        return await self._run(_Calls.login(email, password))

    async def device_code(self) -> DeviceCode:
        return await self._run(_Calls.device_code())

    async def poll(self, device_code: str) -> Session:
        return await self._run(_Calls.poll(device_code))

    async def approve_device(self, user_code: str, *, approve: bool = True) -> DeviceDecision:
        return await self._run(_Calls.approve_device(user_code, approve))

    async def whoami(self) -> WhoAmI:
        return await self._run(_Calls.whoami())

    async def logout(self) -> LogoutResult:
        return await self._run(_Calls.logout())

    async def list_keys(self) -> list[Key]:
        return await self._run(_Calls.list_keys())

    async def create_key(
        self,
        name: str,
        *,
        max_concurrency: int | None = None,
        daily_limit_micros: int | None = None,
        monthly_limit_micros: int | None = None,
        requests_per_minute: int | None = None,
        characters_per_minute: int | None = None,
    ) -> CreatedKey:
        return await self._run(
            _Calls.create_key(name, max_concurrency, daily_limit_micros, monthly_limit_micros, requests_per_minute, characters_per_minute)
        )

    async def delete_key(self, key_id: str) -> RevokedKey:
        return await self._run(_Calls.delete_key(key_id))

    async def transcribe(
        self,
        audio: bytes,
        *,
        filename: str = "audio.wav",
        model: str = "whisper-1",
        language: str | None = None,
        prompt: str | None = None,
        response_format: TranscriptFormat | None = None,
        temperature: float | None = None,
        timestamp_granularities: Sequence[Literal["word", "segment"]] | None = None,
    ) -> Any:
        fields = {"language": language, "prompt": prompt, "response_format": response_format, "temperature": temperature,
                  "timestamp_granularities": _csv(timestamp_granularities)}
        return await self._run(_Calls.transcribe("transcriptions", audio, filename, model, fields))

    async def translate(
        self, audio: bytes, *, filename: str = "audio.wav", model: str = "whisper-1", prompt: str | None = None,
        response_format: TranscriptFormat | None = None, temperature: float | None = None,
    ) -> Any:
        fields = {"prompt": prompt, "response_format": response_format, "temperature": temperature}
        return await self._run(_Calls.transcribe("translations", audio, filename, model, fields))

    async def billing_methods(self) -> list[PaymentMethod]:
        return await self._run(_Calls.billing_methods())

    async def billing_topup(self, amount_cents: int, payment_method_id: str, *, idempotency_key: str | None = None) -> Topup:
        return await self._run(_Calls.billing_topup(amount_cents, payment_method_id, idempotency_key))

    async def billing_checkout(self, amount_cents: int) -> Checkout:
        return await self._run(_Calls.billing_checkout(amount_cents))
