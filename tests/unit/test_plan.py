"""`plan` (router/resilience/dispatch.py): from a request's model string to the targets that can serve it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.fake_providers import FakeProvider, config, providers
from voxrouter.router.http.errors import ApiError
from voxrouter.router.resilience.dispatch import Attempt, Plan, plan, speakable
from voxrouter.router.schemas import SpeechRequest

CONFIG = config()


def _body(model: str = "alpha/a-small", **fields: Any) -> SpeechRequest:
    values: dict[str, Any] = {"model": model, "input": "Hello there.", "voice": "alloy", **fields}
    return SpeechRequest(**values)


def _plan(model: str = "alpha/a-small", fakes: dict[str, FakeProvider] | None = None, **fields: Any) -> Plan:
    return plan(CONFIG, fakes or providers(CONFIG), _body(model, **fields))


def _refusal(model: str = "alpha/a-small", fakes: dict[str, FakeProvider] | None = None, **fields: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        _plan(model, fakes, **fields)
    return info.value


def _targets(p: Plan) -> list[tuple[str, str | None]]:
    return [(t.label, t.voice) for t in p.targets]


# --- resolving the model string ---------------------------------------------------------


def test_provider_slash_model_is_one_target_with_the_clients_voice() -> None:
    p = _plan("alpha/a-small", voice={"id": "alloy"})

    [target] = p.targets
    assert (target.provider.id, target.model_id, target.voice) == ("alpha", "a-small", "alloy")
    assert target.listed and target.metric_label == "alpha/a-small"
    assert target.model == CONFIG.providers["alpha"].models["a-small"]
    assert target.upstream_format == "mp3"
    assert p.primary.label == "alpha/a-small"
    assert p.client_voice == "alloy"
    assert p.skipped == []


def test_an_alias_expands_to_its_targets_with_their_mapped_voices() -> None:
    p = _plan("speak", voice="narrator")

    assert _targets(p) == [("alpha/a-small", "a-narrator"), ("beta/b1", "b-narrator")]
    assert p.primary.voice == "a-narrator"


def test_an_alias_voice_pinned_to_another_model_is_served_there() -> None:
    assert _targets(_plan("mixed", voice="quick")) == [("beta/b1", "b-quick")]
    assert _targets(_plan("mixed", voice="calm")) == [("alpha/a-small", "a-calm")]
    assert _targets(_plan("mixed", voice="other")) == [("alpha/a-small", "other")]


def test_a_pin_to_a_model_string_without_a_provider_is_refused_at_load() -> None:
    with pytest.raises(ValueError, match="'provider/model_id', got 'b1'"):
        config(aliases={"bad": {"target": "alpha/a-small", "voices": {"quick": {"model": "b1", "voice": "x"}}}})


def test_an_alias_without_a_voice_entry_passes_the_voice_and_maps_its_fallbacks() -> None:
    p = _plan("speak", voice="alloy")

    # The primary keeps the client's voice; the fallback's comes from voice_map["alpha/alloy"].
    assert _targets(p) == [("alpha/a-small", "alloy"), ("beta/b1", "b-alloy")]


def test_the_short_alias_form_is_one_target() -> None:
    assert _targets(_plan("solo", voice="g-voice")) == [("gamma/g1", "g-voice")]


def test_fallback_models_follow_the_primary_in_order() -> None:
    p = _plan("alpha/a-small", models=["gamma/g1", "alpha/a-big", "speak"], voice="narrator")

    assert _targets(p) == [
        ("alpha/a-small", "narrator"),
        ("gamma/g1", "g-narrator"),
        ("alpha/a-big", "narrator"),
        ("alpha/a-small", "a-narrator"),  # the alias's own voice: another target than the primary
        ("beta/b1", "b-narrator"),
    ]


def test_a_fallbacks_voice_is_mapped_by_name_or_kept_on_the_same_provider_else_matched_later() -> None:
    by_name = _plan("alpha/a-small", models=["gamma/g1", "alpha/a-big", "beta/b1"], voice="narrator")
    assert _targets(by_name) == [
        ("alpha/a-small", "narrator"),
        ("gamma/g1", "g-narrator"),  # voice_map["narrator"]["gamma"]
        ("alpha/a-big", "narrator"),  # the same provider: the same voice
        ("beta/b1", None),  # no map entry: matched by language and gender when reached
    ]
    by_primary_voice = _plan("alpha/a-small", models=["beta/b1", "gamma/g1"], voice="alloy")
    assert _targets(by_primary_voice) == [("alpha/a-small", "alloy"), ("beta/b1", "b-alloy"), ("gamma/g1", None)]


def test_the_same_target_twice_is_tried_once() -> None:
    p = _plan("alpha/a-small", models=["alpha/a-small", "speak"], voice="alloy")

    assert _targets(p) == [("alpha/a-small", "alloy"), ("beta/b1", "b-alloy")]


# --- 400s before anything is held -------------------------------------------------------


@pytest.mark.parametrize("text", ["!!! ...", "🎉🎉", "\ue000", "  \n\t"])
def test_input_with_nothing_to_speak_is_refused(text: str) -> None:
    error = _refusal(input=text)

    assert (error.status, error.code) == (400, "invalid_body")
    assert "nothing to speak" in error.details


@pytest.mark.parametrize("text", ["a", "7", "日本", "١٢٣", "Ⅻ"])
def test_a_letter_or_digit_in_any_script_is_speakable(text: str) -> None:
    assert speakable(text)


@pytest.mark.parametrize(
    ("model", "details"),
    [
        ("no-such-alias", "model must be 'provider/model_id' or a known alias, got 'no-such-alias'"),
        ("alpha/", "model must be 'provider/model_id', got 'alpha/'"),
        ("/a-small", "model must be 'provider/model_id', got '/a-small'"),
        ("zeta/z1", "unknown_provider: zeta"),
        ("beta/b-new", "unknown_model: beta/b-new"),  # beta refuses unlisted ids
    ],
)
def test_a_model_string_that_names_nothing_is_invalid_model(model: str, details: str) -> None:
    error = _refusal(model)

    assert (error.status, error.code, error.details) == (400, "invalid_model", details)


def test_an_unknown_fallback_fails_the_request_even_when_the_primary_is_fine() -> None:
    error = _refusal("alpha/a-small", models=["zeta/z1"])

    assert (error.status, error.code) == (400, "invalid_model")


# --- unlisted models --------------------------------------------------------------------


def test_an_unlisted_model_is_priced_at_the_providers_dearest_listed_model() -> None:
    [target] = _plan("alpha/a-snapshot-2099").targets

    assert not target.listed
    assert target.model.price_micros_per_1k_chars == 5_000  # a-big; the default would be 2,000
    assert target.metric_label == "alpha/other"
    assert target.label == "alpha/a-snapshot-2099"


def test_an_unlisted_model_keeps_a_default_dearer_than_every_listed_one() -> None:
    [target] = _plan("gamma/g-next").targets

    assert target.model.price_micros_per_1k_chars == 9_000


# --- skipped targets, and why --------------------------------------------------------------


def test_an_unconfigured_fallback_is_skipped_with_its_reason() -> None:
    fakes = providers(CONFIG, beta={"unavailable": {"*": "missing_api_key"}})

    p = _plan("alpha/a-small", fakes, models=["beta/b1", "gamma/g1"], voice="narrator")

    assert [t.label for t in p.targets] == ["alpha/a-small", "gamma/g1"]
    assert p.skipped == [Attempt("beta", "b1", None, "skipped", "missing_api_key")]
    assert p.skipped[0].as_dict() == {"provider": "beta", "model": "b1", "outcome": "skipped", "reason": "missing_api_key"}


def test_an_unusable_primary_leaves_the_fallbacks_and_stays_the_primary() -> None:
    fakes = providers(CONFIG, alpha={"unavailable": {"a-small": "model_not_installed"}})

    p = _plan("alpha/a-small", fakes, models=["alpha/a-big"])

    assert [t.label for t in p.targets] == ["alpha/a-big"]
    assert p.primary.label == "alpha/a-small"  # voice matching still starts from it
    assert [(a.model, a.reason) for a in p.skipped] == [("a-small", "model_not_installed")]


def test_an_unconfigured_provider_alone_is_503_not_configured() -> None:
    fakes = providers(CONFIG, alpha={"unavailable": {"*": "missing_api_key"}})

    error = _refusal("alpha/a-small", fakes)

    assert (error.status, error.code) == (503, "provider_unavailable")
    assert error.details == "alpha is not configured (missing_api_key)"
    assert error.headers == {}


def test_when_nothing_is_usable_the_primarys_error_is_the_answer() -> None:
    fakes = providers(
        CONFIG, alpha={"unavailable": {"a-small": "model_not_installed"}}, beta={"unavailable": {"*": "missing_api_key"}}
    )

    error = _refusal("alpha/a-small", fakes, models=["beta/b1"])

    assert (error.status, error.code) == (503, "provider_unavailable")
    assert error.details == "alpha/a-small is unavailable (model_not_installed)"
    assert error.headers == {"Retry-After": "60"}


def test_input_over_a_targets_cap_skips_it_as_unsupported() -> None:
    p = _plan("alpha/a-small", models=["alpha/a-big"], input="x" * 101)  # a-small takes 100

    assert [t.label for t in p.targets] == ["alpha/a-big"]
    assert [(a.model, a.reason) for a in p.skipped] == [("a-small", "unsupported")]


def test_the_cap_is_on_characters_as_spoken() -> None:
    fakes = providers(CONFIG, alpha={"spoken_factor": 2})  # every character is spoken twice

    error = _refusal("alpha/a-small", fakes, input="x" * 51)

    assert (error.status, error.code) == (400, "invalid_body")
    assert error.details == "input is 102 characters as spoken; alpha/a-small accepts at most 100"


def test_a_text_already_over_the_cap_is_refused_without_normalising_it() -> None:
    fakes = providers(CONFIG, alpha={"spoken_factor": 2})
    counted: list[int] = []
    spoken = fakes["alpha"].spoken_characters
    fakes["alpha"].spoken_characters = lambda model, text: counted.append(len(text)) or spoken(model, text)  # type: ignore[method-assign]

    error = _refusal("alpha/a-small", fakes, input="x" * 50, provider_options={"instructions": "y" * 200_000})

    assert error.details == "provider_options.instructions is 200000 characters as spoken; alpha/a-small accepts at most 100"
    assert 200_000 not in counted  # never normalised: it is over the cap as sent (spoken >= len)


def test_every_text_field_is_capped_on_its_own() -> None:
    options = {"context": {"previous_text": ["fine", "y" * 101]}}

    error = _refusal("alpha/a-small", input="short", provider_options=options)

    assert (
        error.details
        == "provider_options.context.previous_text[1] is 101 characters as spoken; alpha/a-small accepts at most 100"
    )


def test_provider_options_may_not_override_fields_the_price_was_set_from() -> None:
    fakes = providers(CONFIG, alpha={"fixed_fields": frozenset({"text", "model_id"})})

    error = _refusal("alpha/a-small", fakes, provider_options={"model_id": "x", "text": "y", "style": 1})

    assert (error.status, error.code) == (400, "invalid_body")
    assert error.details == "provider_options may not set model_id, text: use the request's own fields"


def test_a_format_the_upstream_cannot_make_or_transcode_is_unsupported() -> None:
    error = _refusal("gamma/g1", response_format="wav")  # gamma makes mp3 only, no PCM to transcode

    assert (error.status, error.code) == (400, "invalid_body")
    assert error.details.startswith("gamma/g1: cannot produce wav")


def test_a_format_made_from_pcm_asks_the_upstream_for_pcm() -> None:
    assert _plan("alpha/a-small", response_format="wav").targets[0].upstream_format == "pcm"
    assert _plan("alpha/a-small", response_format="mp3").targets[0].upstream_format == "mp3"


# --- characters and cost ----------------------------------------------------------------


def test_characters_count_every_text_field_as_spoken() -> None:
    body = {"input": "Hello", "instructions": "calm", "provider_options": {"next_text": "Bye", "speed_hint": 3}}

    [target] = _plan("alpha/a-big", providers(CONFIG, alpha={"spoken_factor": 3}), **body).targets

    assert target.characters == 3 * len("Hello" + "calm" + "Bye")


def test_cost_is_characters_times_price_rounded_up() -> None:
    [target] = _plan("alpha/a-small", input="x" * 17).targets  # 1,000 micros per 1k characters

    assert target.cost_micros() == 17
    [dear] = _plan("gamma/g1", input="x" * 3).targets  # 4,000 per 1k: 12
    assert dear.cost_micros() == 12
    [odd] = _plan("alpha/a-big", input="x" * 1).targets  # 5,000 per 1k: 5
    assert odd.cost_micros() == 5


def test_the_plan_holds_enough_for_its_dearest_target_and_its_longest_count() -> None:
    fakes = providers(CONFIG, beta={"spoken_factor": 2})

    p = _plan("alpha/a-small", fakes, models=["alpha/a-big", "beta/b1"], input="x" * 10, voice="narrator")

    assert [t.cost_micros() for t in p.targets] == [10, 50, 60]
    assert p.reserve_micros() == 60
    assert p.characters == 20


def test_audio_billed_models_ask_for_pcm_and_reserve_for_the_longest_audio() -> None:
    [target] = _plan("alpha/a-audio", input="x" * 30, response_format="mp3").targets

    assert target.billed_by_audio
    assert target.upstream_format == "pcm"  # measured as it streams
    assert target.max_audio_ms == 30 * 100
    assert target.cost_micros() == 30 + 3_000  # characters, plus 3 s at 60,000 per minute
    assert target.cost_micros(audio_ms=1_000) == 30 + 1_000
    assert target.cost_micros(audio_ms=10_000) == 30 + 3_000  # never more than reserved


def test_slowed_speech_reserves_longer_audio_and_faster_speech_no_less() -> None:
    [slow] = _plan("alpha/a-audio", input="x" * 30, speed=0.5).targets
    [fast] = _plan("alpha/a-audio", input="x" * 30, speed=2.0).targets

    assert slow.max_audio_ms == 6_000
    assert fast.max_audio_ms == 3_000


def test_an_audio_billed_model_without_a_pcm_upstream_is_unsupported() -> None:
    error = _refusal("gamma/g-audio")

    assert (error.status, error.code) == (400, "invalid_body")
    assert error.details == "gamma/g-audio is billed by audio length, which needs a PCM upstream"
