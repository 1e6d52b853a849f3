"""The Hibari engine without its model: what is installed, requests checked against its one
voice, phonemes cut into bounded runs, and load wired to the bundled file only (on a stand-in
for `hibari.Hibari`). The real model speaking is tests/integration/test_hibari_engine.py."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np
import pytest

import voxrouter.local_engines.hibari as hibari_engine
from voxrouter.local_engines.base import EngineNotInstalled, EngineVoice, InvalidOption, UnknownVoice
from voxrouter.local_engines.hibari import HibariEngine, phoneme_runs
from voxrouter.local_engines.registry import build_engine

HEART = EngineVoice(id="heart", name="Heart", language="en-US", gender="female", accent="American")


def _hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name in modules else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


# --- what is installed ------------------------------------------------------------------------


def test_installed_here_with_its_bundled_model():
    assert HibariEngine().missing() is None
    model = hibari_engine.bundled_model()
    assert model is not None and model.name == "hibari.onnx" and model.parent.name == "assets" and model.is_file()


def test_missing_when_hibari_is_not_installed(monkeypatch):
    _hide(monkeypatch, "hibari")
    engine = HibariEngine()
    assert engine.missing() == "hibari-tts is not installed"
    with pytest.raises(EngineNotInstalled, match="hibari-tts is not installed"):
        engine.load()


def test_missing_when_onnxruntime_is_not_installed(monkeypatch):
    _hide(monkeypatch, "onnxruntime")
    assert HibariEngine().missing() == "onnxruntime is not installed"


def test_missing_when_the_bundled_model_is_gone(monkeypatch, tmp_path):
    monkeypatch.setattr(hibari_engine, "bundled_model", lambda: tmp_path / "assets" / "hibari.onnx")
    assert "no bundled voice model" in HibariEngine().missing()


def test_a_bundled_model_that_fails_its_checksum_is_not_loaded(tmp_path):
    fake = tmp_path / "hibari.onnx"
    fake.write_bytes(b"not the model")
    with pytest.raises(EngineNotInstalled, match="sha256"):
        hibari_engine._check_bundled(fake)
    hibari_engine._check_bundled(hibari_engine.bundled_model())  # the real one passes


# --- settings ------------------------------------------------------------------------------------


def test_defaults_and_settings():
    engine = HibariEngine()
    assert (engine.id, engine.sample_rate, engine.first_chunk_chars, engine.max_chunk_chars, engine.max_phonemes) == (
        "hibari", 24_000, 48, 300, 256)
    tuned = HibariEngine("hibari-fast", threads=2, device="cpu", first_chunk_chars=20, max_chunk_chars=200, max_phonemes=64,
                         voices_dir="/ignored")
    assert (tuned.id, tuned.first_chunk_chars, tuned.max_chunk_chars, tuned.max_phonemes) == ("hibari-fast", 20, 200, 64)
    assert HibariEngine.max_phonemes == 256  # settings are per instance


def test_built_from_the_registry():
    engine = build_engine("hibari", "hibari", {"threads": 1, "device": "auto"})
    assert isinstance(engine, HibariEngine) and engine.id == "hibari"


# --- voices and requests ----------------------------------------------------------------------


def test_one_voice_heart():
    assert HibariEngine().voices() == [HEART]


def test_utterance_for_heart_loads_nothing():
    engine = HibariEngine()
    utterance = engine.utterance("heart", None, {})
    assert (utterance.voice, utterance.speed, utterance.options) == (HEART, 1.0, {})
    assert engine.utterance("heart", 0.5, {}).speed == 0.5
    assert engine.utterance("heart", 2.0, {}).speed == 2.0
    assert engine._tts is None


@pytest.mark.parametrize("voice", ["emma", "fenrir", "af_heart", "Heart", ""])
def test_other_voices_are_unknown(voice):
    # hibari's other voices exist in the package's registry but download from a model hub.
    with pytest.raises(UnknownVoice, match=r"it has heart$"):
        HibariEngine().utterance(voice, None, {})


@pytest.mark.parametrize("options", [{"seed": 1}, {"language": "en-gb"}, {"noise_scale": 0.5, "voice": "emma"}])
def test_it_takes_no_provider_options(options):
    with pytest.raises(InvalidOption, match=r"\(it takes none\)") as caught:
        HibariEngine().utterance("heart", None, options)
    assert all(key in str(caught.value) for key in options)


@pytest.mark.parametrize("speed", [0.49, 2.01, 0.0, -1.0, 10.0])
def test_speed_outside_what_hibari_supports(speed):
    with pytest.raises(InvalidOption, match="speed 0.5 to 2"):
        HibariEngine().utterance("heart", speed, {})


# --- bounded runs -------------------------------------------------------------------------------


SENTENCE = "ðə kwˈɪk bɹˈWn fˈɑks ʤˈʌmps ˈOvəɹ ðə lˈAzi dˈɔɡ, ænd ɹˈʌnz əwˈA; ɪt nˈɛvəɹ kˈʌmz bˈæk."


def test_a_short_sentence_is_one_run():
    assert phoneme_runs(SENTENCE, 256) == [SENTENCE]
    assert phoneme_runs("  ", 256) == [] and phoneme_runs("", 256) == []
    assert phoneme_runs(" həlˈO   ðˈɛɹ. ", 256) == ["həlˈO ðˈɛɹ."]


def test_cut_at_clauses_first():
    runs = phoneme_runs(SENTENCE, 60)
    assert runs == ["ðə kwˈɪk bɹˈWn fˈɑks ʤˈʌmps ˈOvəɹ ðə lˈAzi dˈɔɡ,", "ænd ɹˈʌnz əwˈA; ɪt nˈɛvəɹ kˈʌmz bˈæk."]


def test_a_clause_too_long_is_cut_between_words():
    runs = phoneme_runs(SENTENCE, 20)
    assert all(0 < len(run) <= 20 for run in runs)
    assert " ".join(runs) == SENTENCE
    assert all(run.split(" ")[0] in SENTENCE.split(" ") for run in runs)  # every run starts on a word


@pytest.mark.parametrize("most", [1, 2, 7, 33, 128, 256])
def test_runs_are_bounded_and_lose_nothing(most):
    text = " ".join([SENTENCE] * 20) + " " + "ɑ" * 700  # and one "word" longer than any run
    runs = phoneme_runs(text, most)
    assert runs and all(0 < len(run) <= most for run in runs)
    assert all(run == run.strip() and "  " not in run for run in runs)
    assert "".join(runs).replace(" ", "") == text.replace(" ", "")


# --- loading, on a stand-in for hibari.Hibari ---------------------------------------------------


class FakeHibari:
    """What the engine uses of `hibari.Hibari`: a tone per run, its length the run's."""

    made: list[dict] = []

    def __init__(self, **kwargs):
        FakeHibari.made.append(kwargs)
        self.g2p = lambda sentence: sentence.lower()
        self.g2p.oov = None

    @staticmethod
    def split_sentences(text):
        return [s for s in text.split(". ") if s]

    def ids(self, phonemes):
        return [0, *[ord(c) for c in phonemes], 0]

    def from_ids(self, ids, speed=1.0, rng=None):
        n = int(100 * (len(ids) - 2) / speed)
        return 2.0 * np.sin(np.arange(n, dtype=np.float32) + float(rng.random()))  # out of range: the engine clips


@pytest.fixture
def fake_hibari(monkeypatch):
    import hibari
    import hibari.tts
    import hibari.voices

    def no_lookup(*args, **kwargs):
        raise AssertionError("the voice registry's lookup (which downloads) was used")

    for module in (hibari.voices, hibari.tts):
        monkeypatch.setattr(module, "voice_path", no_lookup)
    monkeypatch.setattr(hibari.voices, "download", no_lookup)
    monkeypatch.setattr(hibari, "Hibari", FakeHibari)
    FakeHibari.made = []
    return FakeHibari


def test_load_opens_only_the_bundled_file_once_from_many_threads(fake_hibari):
    engine = HibariEngine(threads=3)
    threads = [threading.Thread(target=engine.load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.load()
    assert fake_hibari.made == [{"model": str(hibari_engine.bundled_model()), "threads": 3}]
    assert Path(fake_hibari.made[0]["model"]).is_file()
    engine.close()
    engine.load()
    assert len(fake_hibari.made) == 2


def test_threads_default_to_one(fake_hibari):
    HibariEngine().load()
    assert fake_hibari.made[0]["threads"] == 1


def test_plan_render_synthesize_on_the_stand_in(fake_hibari):
    engine = HibariEngine(max_phonemes=10)
    utterance = engine.utterance("heart", 2.0, {})
    runs = engine.plan("One two three four five. Six seven", utterance)
    assert runs == ["one two", "three four", "five", "six seven"]
    audio = engine.synthesize("One two three four five. Six seven", utterance)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert float(np.abs(audio).max()) <= 1.0
    assert np.array_equal(audio, np.concatenate([engine.render(run, utterance) for run in runs]))
    assert len(engine.synthesize("...", utterance)) > 0 and len(engine.synthesize("", utterance)) == 0
