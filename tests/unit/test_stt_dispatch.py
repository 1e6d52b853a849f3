"""A transcription's fallback chain (router/transcription/models.py `chain`) and its dispatch
through the speech path's circuit breakers (router/transcription/dispatch.py), on fake transcribers."""

from __future__ import annotations

import pytest

from voxrouter.local_engines.whisper import Transcript
from voxrouter.providers.transcription import TranscriberFeatures, TranscriptionError, TranscriptionRequest
from voxrouter.router.config import TranscriptionSpec, load_config
from voxrouter.router.http.errors import ApiError
from voxrouter.router.resilience.health import HealthBoard
from voxrouter.router.transcription import dispatch
from voxrouter.router.transcription.models import chain

HEARD = Transcript(text="heard", language="en", language_probability=1.0, duration=1.0, segments=[], words=[])


class Fake:
    def __init__(self, pid: str, models: tuple[str, ...], fail: str | None = None, key: bool = True) -> None:
        self.id = pid
        self._models = models
        self.fail = fail
        self.key = key
        self.calls = 0

    def models(self) -> tuple[str, ...]:
        return self._models

    def features(self, model: str) -> TranscriberFeatures:
        return TranscriberFeatures()

    def unavailable_reason(self, model: str) -> str | None:
        return None if self.key else "missing_api_key"

    def check(self, request: TranscriptionRequest) -> None:
        return None

    async def transcribe(self, request: TranscriptionRequest) -> Transcript:
        self.calls += 1
        if self.fail:
            raise TranscriptionError(self.fail, f"{self.id} failed ({self.fail})", retry_after=3 if self.fail == "rate_limited" else None)
        return HEARD

    async def aclose(self) -> None:
        return None


def _spec() -> TranscriptionSpec:
    return TranscriptionSpec.model_validate({
        "models": {
            "local/whisper-tiny.en": {},
            "openai/whisper-1": {"price_micros_per_minute": 6000, "fallbacks": ["elevenlabs/scribe_v2", "local/whisper-tiny.en"]},
            "elevenlabs/scribe_v2": {"price_micros_per_minute": 6700},
        },
        "aliases": {"whisper-1": "openai/whisper-1"},
    })  # fmt: skip


def _job() -> TranscriptionRequest:
    return TranscriptionRequest(audio=b"x", filename="a.wav", model="whisper-1")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_chain_is_the_model_then_its_fallbacks_leaving_out_what_cannot_serve() -> None:
    fakes = {"openai": Fake("openai", ("whisper-1",)), "elevenlabs": Fake("elevenlabs", ("scribe_v2",), key=False), "local": Fake("local", ("whisper-tiny.en",))}
    assert [t.label for t in chain(_spec(), fakes, "whisper-1")] == ["openai/whisper-1", "local/whisper-tiny.en"]
    fakes["openai"].key = False  # the primary has no key: its fallbacks serve
    assert [t.label for t in chain(_spec(), fakes, "openai/whisper-1")] == ["local/whisper-tiny.en"]
    with pytest.raises(ApiError) as info:
        chain(_spec(), fakes, "openai/gpt-4o-transcribe")
    assert (info.value.status, info.value.code) == (400, "invalid_model")


def test_chain_with_nothing_servable_is_the_primarys_503() -> None:
    fakes = {"openai": Fake("openai", ("whisper-1",), key=False), "elevenlabs": Fake("elevenlabs", ("scribe_v2",), key=False)}
    with pytest.raises(ApiError) as info:
        chain(_spec(), fakes, "whisper-1")
    assert info.value.status == 503 and "missing_api_key" in info.value.details


def test_config_refuses_a_fallback_that_is_not_listed() -> None:
    with pytest.raises(ValueError, match="falls back"):
        TranscriptionSpec.model_validate({"models": {"openai/whisper-1": {"fallbacks": ["local/nope"]}}, "aliases": {}})


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["upstream", "rate_limited", "auth", "timeout", "busy"])
async def test_an_upstream_failure_falls_back_and_is_recorded(kind: str) -> None:
    fakes = {"openai": Fake("openai", ("whisper-1",), fail=kind), "elevenlabs": Fake("elevenlabs", ("scribe_v2",)), "local": Fake("local", ("whisper-tiny.en",))}
    attempts: list[dict[str, str | None]] = []
    served = await dispatch.transcribe(HealthBoard(load_config(), {}), chain(_spec(), fakes, "whisper-1"), _job(), "org-a", attempts)
    assert served.target.label == "elevenlabs/scribe_v2" and served.transcript is HEARD
    assert [(a["provider"], a["outcome"], a["reason"]) for a in attempts] == [("openai", "failed", kind), ("elevenlabs", "served", None)]


@pytest.mark.anyio
async def test_the_clients_own_error_on_the_primary_ends_it_at_once() -> None:
    fakes = {"openai": Fake("openai", ("whisper-1",), fail="invalid_audio"), "elevenlabs": Fake("elevenlabs", ("scribe_v2",))}
    with pytest.raises(ApiError) as info:
        await dispatch.transcribe(HealthBoard(load_config(), {}), chain(_spec(), fakes, "whisper-1"), _job(), "org-a", [])
    assert (info.value.status, info.value.code) == (400, "invalid_audio") and fakes["elevenlabs"].calls == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [("rate_limited", 503, "provider_unavailable"), ("upstream", 502, "upstream_error"), ("auth", 502, "upstream_error"), ("timeout", 504, "upstream_error")],
)
async def test_the_last_failure_is_the_answer(kind: str, status: int, code: str) -> None:
    fakes = {"openai": Fake("openai", ("whisper-1",), fail=kind)}
    spec = TranscriptionSpec.model_validate({"models": {"openai/whisper-1": {}}, "aliases": {}})
    with pytest.raises(ApiError) as info:
        await dispatch.transcribe(HealthBoard(load_config(), {}), chain(spec, fakes, "openai/whisper-1"), _job(), "org-a", [])
    assert (info.value.status, info.value.code) == (status, code)
    if status == 503:
        assert info.value.headers == {"Retry-After": "3"}


@pytest.mark.anyio
async def test_failures_open_the_providers_stt_circuit_which_is_then_skipped() -> None:
    config = load_config()
    health = HealthBoard(config, {})
    fakes = {"openai": Fake("openai", ("whisper-1",), fail="upstream"), "elevenlabs": Fake("elevenlabs", ("scribe_v2",)), "local": Fake("local", ("whisper-tiny.en",))}
    targets = chain(_spec(), fakes, "whisper-1")
    fail_max = config.breaker("openai").fail_max
    for index in range(fail_max):  # two organizations take part, so the circuit opens for everyone
        await dispatch.transcribe(health, targets, _job(), f"org-{index % 2}", [])
    assert health.stt_circuit("openai").state == "open" and fakes["openai"].calls == fail_max
    attempts: list[dict[str, str | None]] = []
    served = await dispatch.transcribe(health, targets, _job(), "org-c", attempts)
    assert served.target.label == "elevenlabs/scribe_v2" and fakes["openai"].calls == fail_max  # not called again
    assert attempts[0] == {"provider": "openai", "model": "whisper-1", "voice": None, "outcome": "skipped", "reason": "circuit_open"}
    assert "stt:openai" in health.circuits()
