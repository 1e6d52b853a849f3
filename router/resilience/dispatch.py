"""From a model string to a started audio stream, across fallbacks, retries and breakers.

`plan` turns the request's `model` (and its optional `models` fallback list) into the
ordered targets that can serve it; aliases may name several. `start` walks them:
each call goes through its provider's circuit breaker, retryable failures are retried
with jittered backoff, and the next target is tried, all only before the first audio
byte. It returns once a target's first bytes exist, so every failure up to then is a
proper HTTP error, never a broken stream; after that the stream is the served target's
alone (a later failure ends it, it is never spliced with another voice).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
import unicodedata
from typing import Any, AsyncIterator

import anyio

from voxrouter.providers.base import ErrorKind, Provider, ProviderError, SynthesisRequest, Voice
from voxrouter.providers.spec import ModelSpec, audio_cost_micros, estimate_cost_micros
from voxrouter.router.catalog.routes import Catalog
from voxrouter.router.config import Config, RetrySpec, VoicePin
from voxrouter.router.http.errors import ApiError
from voxrouter.router.resilience.breaker import CircuitOpen, Ticket
from voxrouter.router.resilience.health import HealthBoard
from voxrouter.router.schemas import SpeechRequest
from voxrouter.router.speech import audio

logger = logging.getLogger("voxrouter.dispatch")

RETRYABLE = frozenset({ErrorKind.unavailable, ErrorKind.timeout, ErrorKind.rate_limited})


@dataclasses.dataclass(frozen=True)
class Target:
    provider: Provider
    model_id: str
    voice: str | None  # None: matched by language and gender when this target is reached
    model: ModelSpec
    upstream_format: str = ""
    listed: bool = True  # named in the config (not an unlisted id passed through)
    characters: int = 0  # what the request counts for on this target: every text field, as spoken
    max_audio_ms: int = 0  # the longest audio it may make, for models billed by audio

    @property
    def label(self) -> str:
        return f"{self.provider.id}/{self.model_id}"

    def cost_micros(self, audio_ms: int | None = None) -> int:
        """The price on this target: its characters, plus its audio for models billed by it
        (`audio_ms` measured, or the most it may be: what is reserved)."""
        cost = estimate_cost_micros(self.characters, self.model.price_micros_per_1k_chars)
        if self.model.price_micros_per_audio_minute:
            spoken = self.max_audio_ms if audio_ms is None else min(audio_ms, self.max_audio_ms)
            cost += audio_cost_micros(spoken, self.model.price_micros_per_audio_minute)
        return cost

    @property
    def billed_by_audio(self) -> bool:
        return self.model.price_micros_per_audio_minute > 0

    @property
    def metric_label(self) -> str:
        """The model as a metrics label: client-chosen unlisted ids share one value."""
        return self.label if self.listed else f"{self.provider.id}/other"


@dataclasses.dataclass
class Attempt:
    """One line of a usage row's `attempts`: a target tried or passed over, and why."""

    provider: str
    model: str
    voice: str | None
    outcome: str  # served | failed | skipped
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclasses.dataclass
class Plan:
    targets: list[Target]  # usable, in order; the first is the primary
    skipped: list[Attempt]
    client_voice: str
    primary: Target  # the request's first target, usable or not (voice matching starts from it)

    @property
    def characters(self) -> int:
        """The most characters any usable target counts the request for (limits and caps)."""
        return max(t.characters for t in self.targets)

    def reserve_micros(self) -> int:
        """Hold enough for the dearest target the request may end up on."""
        return max(t.cost_micros() for t in self.targets)


@dataclasses.dataclass
class Started:
    chunks: AsyncIterator[bytes]
    target: Target
    ticket: Ticket  # the served call's breaker ticket, settled when the stream ends


# --- planning ---------------------------------------------------------------------------


def plan(config: Config, providers: dict[str, Provider], body: SpeechRequest) -> Plan:
    """The usable targets in order, or the primary's error when none is usable."""
    if not speakable(body.input):
        raise ApiError(400, "invalid_body", "input has nothing to speak: it needs at least one letter or digit")
    client_voice = body.voice_id
    chain = _expand(config, providers, [body.model, *body.models], client_voice)
    primary = chain[0][0]
    targets: list[Target] = []
    skipped: list[Attempt] = []
    first_error: ApiError | None = None
    seen: set[tuple[str, str, str | None]] = set()
    for index, (target, explicit_voice) in enumerate(chain):
        if index and not explicit_voice:
            target = dataclasses.replace(target, voice=_mapped_voice(config, primary, target, client_voice))
        key = (target.provider.id, target.model_id, target.voice)
        if key in seen:
            continue
        seen.add(key)
        try:
            targets.append(_usable(target, body))
        except _Unusable as exc:
            first_error = first_error or exc.error
            skipped.append(Attempt(target.provider.id, target.model_id, target.voice, "skipped", exc.reason))
    if not targets:
        assert first_error is not None
        raise first_error
    return Plan(targets=targets, skipped=skipped, client_voice=client_voice, primary=primary)


def _expand(
    config: Config, providers: dict[str, Provider], models: list[str], voice: str
) -> list[tuple[Target, bool]]:
    """Each model string as its targets, with whether the voice came from an explicit map."""
    out: list[tuple[Target, bool]] = []
    for model in models:
        if "/" in model:
            out.append((_target(config, providers, model, voice), False))
        elif model in config.aliases:
            for alias_target in config.aliases[model].targets:
                mapped = alias_target.voices.get(voice)
                if isinstance(mapped, VoicePin):  # this voice name is served by another model
                    out.append((_target(config, providers, mapped.model, mapped.voice), True))
                else:
                    out.append((_target(config, providers, alias_target.model, mapped or voice), mapped is not None))
        else:
            raise ApiError(400, "invalid_model", f"model must be 'provider/model_id' or a known alias, got {model!r}")
    return out


def _target(config: Config, providers: dict[str, Provider], model: str, voice: str) -> Target:
    provider_id, _, model_id = model.partition("/")
    if not provider_id or not model_id:
        raise ApiError(400, "invalid_model", f"model must be 'provider/model_id', got {model!r}")
    provider = providers.get(provider_id)
    if provider is None:
        raise ApiError(400, "invalid_model", f"unknown_provider: {provider_id}")
    spec = config.providers[provider_id].model(model_id)
    if spec is None:
        raise ApiError(400, "invalid_model", f"unknown_model: {provider_id}/{model_id}")
    listed = model_id in config.providers[provider_id].models
    return Target(provider=provider, model_id=model_id, voice=voice, model=spec, listed=listed)


def _mapped_voice(config: Config, primary: Target, target: Target, client_voice: str) -> str | None:
    """A fallback's voice from the configured map; the same voice on the same provider;
    else None, to be matched from the catalog."""
    for name in (client_voice, f"{primary.provider.id}/{primary.voice}"):
        voice = config.voice_map.get(name, {}).get(target.provider.id)
        if voice:
            return voice
    return primary.voice if target.provider.id == primary.provider.id else None


def speakable(text: str) -> bool:
    """Whether `text` has a letter or digit in any script once normalised (emoji, punctuation,
    symbols and private-use characters alone are not speech)."""
    return any(unicodedata.category(c)[0] in "LN" for c in unicodedata.normalize("NFKC", text))


def text_length(body: SpeechRequest) -> int:
    """Characters of every text field that reaches a provider, as sent (before normalisation)."""
    return len(body.input) + sum(len(text) for _, text in _other_texts(body))


def _other_texts(body: SpeechRequest) -> list[tuple[str, str]]:
    """Every text field besides `input` that reaches the provider, as (name, text):
    `instructions`, and each string inside `provider_options` (previous_text, next_text, ...)."""
    found: list[tuple[str, str]] = []
    if body.instructions:
        found.append(("instructions", body.instructions))

    def walk(name: str, value: Any) -> None:
        if isinstance(value, str):
            found.append((name, value))
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(f"{name}.{key}", item)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(f"{name}[{index}]", item)

    walk("provider_options", body.provider_options)
    return found


class _Unusable(Exception):
    """A target that cannot take this request: the client's error if none can, and the usage row's reason."""

    def __init__(self, error: ApiError, reason: str) -> None:
        super().__init__(error.details)
        self.error = error
        self.reason = reason


def _usable(target: Target, body: SpeechRequest) -> Target:
    """What the target can't do is refused before any money is held; fills the upstream format."""
    reason = target.provider.unavailable_reason(target.model_id)
    if reason == "missing_api_key":
        error = ApiError(503, "provider_unavailable", f"{target.provider.id} is not configured (missing_api_key)")
        raise _Unusable(error, reason)
    if reason is not None:
        error = ApiError(503, "provider_unavailable", f"{target.label} is unavailable ({reason})", headers={"Retry-After": "60"})
        raise _Unusable(error, reason)
    capabilities = target.provider.capabilities(target.model_id)
    # Counted as spoken (after the provider's normalisation), every text field alike: each
    # is capped on its own, and all of them together are what the request is priced on.
    characters = 0
    for name, text in [("input", body.input), *_other_texts(body)]:
        # Never fewer than len(text): a text already over the cap is refused without the
        # normaliser's passes over it (200,000 characters cost it ~0.2 s of the event loop).
        spoken = len(text) if len(text) > capabilities.max_input_chars else target.provider.spoken_characters(target.model_id, text)
        if spoken > capabilities.max_input_chars:
            error = ApiError(
                400,
                "invalid_body",
                f"{name} is {spoken} characters as spoken; {target.label} accepts at most {capabilities.max_input_chars}",
            )
            raise _Unusable(error, "unsupported")
        characters += spoken
    overridden = sorted(capabilities.fixed_fields & body.provider_options.keys())
    if overridden:
        error = ApiError(
            400, "invalid_body", f"provider_options may not set {', '.join(overridden)}: use the request's own fields"
        )
        raise _Unusable(error, "unsupported")
    billed_by_audio = target.model.price_micros_per_audio_minute > 0
    # Audio billed by the second is measured as PCM, so such a target is asked for PCM.
    requested = "pcm" if billed_by_audio and "pcm" in capabilities.response_formats else body.response_format
    try:
        upstream_format = audio.upstream_format(requested, capabilities.response_formats)
    except ValueError as exc:
        raise _Unusable(ApiError(400, "invalid_body", f"{target.label}: {exc}"), "unsupported") from None
    if billed_by_audio and upstream_format != "pcm":
        error = ApiError(400, "invalid_body", f"{target.label} is billed by audio length, which needs a PCM upstream")
        raise _Unusable(error, "unsupported")
    max_audio_ms = math.ceil(characters * target.model.max_audio_ms_per_char / min(1.0, body.speed or 1.0))
    return dataclasses.replace(target, upstream_format=upstream_format, characters=characters, max_audio_ms=max_audio_ms)


# --- starting ---------------------------------------------------------------------------


def api_error(exc: ProviderError) -> ApiError:
    """The status a client sees for an upstream failure that happened before any audio."""
    if exc.kind is ErrorKind.bad_request:
        return ApiError(400, "invalid_body", f"{exc.provider} rejected the request: {exc.message}")
    headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after is not None else None
    if exc.kind is ErrorKind.overloaded:
        if exc.status == 503:
            return ApiError(503, "provider_unavailable", exc.message, headers=headers)
        return ApiError(429, "concurrency_limited", exc.message, headers=headers)
    if exc.kind is ErrorKind.not_installed:
        return ApiError(503, "provider_unavailable", exc.message, headers={"Retry-After": "60"})
    if exc.kind is ErrorKind.timeout:
        return ApiError(504, "upstream_error", exc.message, headers=headers)
    return ApiError(502, "upstream_error", exc.message, headers=headers)


def _circuit_error(exc: CircuitOpen) -> ApiError:
    return ApiError(
        503,
        "provider_unavailable",
        f"{exc.name} is failing; its circuit breaker is {exc.reason.removeprefix('circuit_').replace('_', '-')}",
        headers={"Retry-After": str(max(1, int(-(-exc.retry_after_s // 1))))},
    )


class Dispatcher:
    def __init__(self, config: Config, health: HealthBoard, catalog: Catalog) -> None:
        self._config = config
        self._retry: RetrySpec = config.resilience.retry
        self._health = health
        self._catalog = catalog

    async def start(self, plan: Plan, request: SynthesisRequest, attempts: list[Attempt], org: str | None = None) -> Started:
        """The first target whose audio starts, called on behalf of organization `org` (the
        circuit breakers weigh failures by organization); each call and pass-over is appended
        to `attempts`."""
        deadline = time.monotonic() + self._retry.deadline_s
        last_error: ApiError | None = None
        for index, target in enumerate(plan.targets):
            circuit = self._health.circuit(target.provider, target.model_id)
            if blocked := circuit.blocked(org):  # before matching a voice: that may cost a listing
                attempts.append(Attempt(target.provider.id, target.model_id, target.voice, "skipped", blocked.reason))
                last_error = _circuit_error(blocked)
                continue
            if target.voice is None:
                voice = await self._matching_voice(plan, target)
                if voice is None:
                    attempts.append(Attempt(target.provider.id, target.model_id, None, "skipped", "no_matching_voice"))
                    last_error = last_error or ApiError(
                        400, "invalid_body", f"no voice on {target.label} matches {plan.client_voice!r}"
                    )
                    continue
                target = dataclasses.replace(target, voice=voice)
            synthesis = dataclasses.replace(
                request, model=target.model_id, voice=target.voice, response_format=target.upstream_format
            )
            for attempt in range(self._retry.attempts):
                try:
                    ticket = circuit.admit(org)
                except CircuitOpen as exc:
                    attempts.append(Attempt(target.provider.id, target.model_id, target.voice, "skipped", exc.reason))
                    last_error = _circuit_error(exc)
                    break
                try:
                    chunks = await self._first_bytes(target, synthesis, deadline)
                except ProviderError as exc:
                    ticket.failed(exc)
                    attempts.append(Attempt(target.provider.id, target.model_id, target.voice, "failed", exc.kind.value))
                    last_error = api_error(exc)
                    if exc.kind is ErrorKind.bad_request and index == 0:
                        raise last_error from None  # the client's own request: no other target will like it
                    delay = self._backoff(attempt, exc)
                    if delay is None or time.monotonic() + delay >= deadline:
                        break
                    logger.info("retrying %s in %.2fs after %s", target.label, delay, exc.kind.value)
                    await anyio.sleep(delay)
                    continue
                except BaseException:
                    ticket.abandoned()
                    raise
                attempts.append(Attempt(target.provider.id, target.model_id, target.voice, "served"))
                return Started(chunks=chunks, target=target, ticket=ticket)
            if time.monotonic() >= deadline:
                break
        assert last_error is not None
        raise last_error

    def _backoff(self, attempt: int, exc: ProviderError) -> float | None:
        """Seconds to wait before retrying the same target, or None to move on."""
        if exc.kind not in RETRYABLE or attempt + 1 >= self._retry.attempts:
            return None
        if exc.retry_after is not None and exc.retry_after > self._retry.max_retry_after_s:
            return None
        ceiling = min(self._retry.backoff_max_s, self._retry.backoff_s * 2**attempt)
        return max(random.uniform(0, ceiling), exc.retry_after or 0.0)

    async def _first_bytes(self, target: Target, request: SynthesisRequest, deadline: float) -> AsyncIterator[bytes]:
        provider = target.provider
        chunks = provider.synthesize(request)
        per_attempt = self._config.providers[provider.id].first_byte_timeout_s
        budget = min(per_attempt, max(0.0, deadline - time.monotonic()))
        try:
            with anyio.fail_after(budget):
                first = await anext(chunks)
        except StopAsyncIteration:
            raise ProviderError(ErrorKind.unavailable, f"{provider.id} returned no audio", provider=provider.id) from None
        except TimeoutError:
            await _close(chunks)
            raise ProviderError(
                ErrorKind.timeout, f"{target.label} sent no audio within {budget:g}s", provider=provider.id
            ) from None
        except BaseException:
            await _close(chunks)
            raise
        return _continue(first, chunks)

    async def _matching_voice(self, plan: Plan, target: Target) -> str | None:
        """A voice on the target with the primary voice's language and gender."""
        primary = plan.primary
        known = await self._catalog.voices([primary.provider.id])
        source = next((v for v in known if v.id == primary.voice), None)
        if source is None:
            return None
        candidates = [
            v
            for v in await self._catalog.voices([target.provider.id])
            if not v.model_compatibility or target.model_id in v.model_compatibility
        ]
        return _closest(source, candidates)


def _closest(source: Voice, candidates: list[Voice]) -> str | None:
    language = source.language.lower().replace("_", "-")
    base = language.split("-")[0]
    gender = source.labels.get("gender", "").lower()

    def rank(voice: Voice) -> tuple[int, int] | None:
        lang = voice.language.lower().replace("_", "-")
        if lang.split("-")[0] != base:
            return None
        other = voice.labels.get("gender", "").lower()
        if gender and other and other != gender:
            return None
        return (0 if lang == language else 1, 0 if other == gender else 1)

    ranked = [(r, i, v.id) for i, v in enumerate(candidates) if (r := rank(v)) is not None]
    return min(ranked)[2] if ranked else None


async def _close(chunks: AsyncIterator[bytes]) -> None:
    with anyio.CancelScope(shield=True):
        await chunks.aclose()  # type: ignore[attr-defined]


async def _continue(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await _close(rest)
