"""The PyTorch engines (Chatterbox, MOSS-TTS-Nano) without torch: what they report, list and accept.

Torch is not installed where these run (nor in CI), so the real models never load here.
What is checked: `missing()` names what is absent, `load()`/`synthesize()` raise
EngineNotInstalled, voices come from a voices_dir, `utterance()` validates options and
reference clips. The load/speak paths are also run against small fake `torch`,
`chatterbox` and `transformers` modules, to check how the engines drive the model
(conditioning per voice, temp files deleted, output shape and range), not the model.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.machinery
import importlib.util
import io
import json
import sys
import types
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voxrouter.local_engines import _torch
from voxrouter.local_engines.base import EngineNotInstalled, InvalidOption, UnknownVoice, Utterance
from voxrouter.local_engines.chatterbox import WEIGHT_FILES, ChatterboxEngine
from voxrouter.local_engines.moss import MossTtsNanoEngine
from voxrouter.providers.local import engine_voice

TORCH_INSTALLED = importlib.util.find_spec("torch") is not None
ENGINES = [ChatterboxEngine, MossTtsNanoEngine]


def _wav_bytes(seconds: float = 0.1, rate: int = 16_000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * int(seconds * rate))
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _chatterbox_weights(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in WEIGHT_FILES:
        (directory / name).write_bytes(b"x")
    return directory


def _moss_weights(directory: Path) -> Path:
    for sub, files in (
        ("MOSS-TTS-Nano-100M", ("config.json", "tokenizer.model", "pytorch_model.bin")),
        ("MOSS-Audio-Tokenizer-Nano", ("config.json", "model.safetensors")),
    ):
        (directory / sub).mkdir(parents=True, exist_ok=True)
        for name in files:
            (directory / sub / name).write_bytes(b"x")
    return directory


def _complete_weights(engine_cls: type, directory: Path) -> Path:
    return _chatterbox_weights(directory) if engine_cls is ChatterboxEngine else _moss_weights(directory)


@pytest.fixture
def voices_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "voices"
    directory.mkdir()
    (directory / "alice.wav").write_bytes(_wav_bytes())
    (directory / "alice.json").write_text(
        json.dumps({"name": "Alice Liddell", "language": "en-GB", "gender": "Female", "transcript": "Down the rabbit hole."})
    )
    (directory / "bob.flac").write_bytes(b"fLaC" + b"\x00" * 32)
    (directory / "bob.json").write_text("{not json")  # unreadable label: defaults apply
    (directory / "carol.mp3").write_bytes(b"ID3" + b"\x00" * 32)
    (directory / "default.wav").write_bytes(_wav_bytes())  # would shadow the built-in voice: skipped
    (directory / "notes.txt").write_text("not a clip")
    return directory


# --- missing() / load() ------------------------------------------------------------------------------


@pytest.mark.parametrize("engine_cls", ENGINES)
def test_missing_names_unconfigured_weights_dir(engine_cls: type) -> None:
    reason = engine_cls(weights_dir=None).missing()
    assert reason is not None and "weights_dir is not configured" in reason


@pytest.mark.parametrize("engine_cls", ENGINES)
def test_missing_names_absent_weights_dir(engine_cls: type, tmp_path: Path) -> None:
    absent = tmp_path / "nowhere"
    reason = engine_cls(weights_dir=str(absent)).missing()
    assert reason is not None and f"{absent} does not exist" in reason


def test_chatterbox_missing_names_each_absent_weight_file(tmp_path: Path) -> None:
    (tmp_path / "ve.safetensors").write_bytes(b"x")
    (tmp_path / "tokenizer.json").write_bytes(b"")  # present but empty: counts as absent
    reason = ChatterboxEngine(weights_dir=str(tmp_path)).missing()
    assert reason is not None
    for name in ("t3_cfg.safetensors", "s3gen.safetensors", "conds.pt", "tokenizer.json (empty)"):
        assert name in reason
    assert "ve.safetensors" not in reason


def test_moss_missing_names_absent_checkpoints_and_files(tmp_path: Path) -> None:
    reason = MossTtsNanoEngine(weights_dir=str(tmp_path)).missing()
    assert reason is not None and "MOSS-TTS-Nano-100M/" in reason and "MOSS-Audio-Tokenizer-Nano/" in reason
    (tmp_path / "MOSS-TTS-Nano").mkdir()  # the older directory name is accepted
    (tmp_path / "MOSS-TTS-Nano" / "config.json").write_text("{}")
    (tmp_path / "MOSS-Audio-Tokenizer-Nano").mkdir()
    reason = MossTtsNanoEngine(weights_dir=str(tmp_path)).missing()
    assert reason is not None
    assert "tokenizer.model" in reason and "*.safetensors or pytorch_model*.bin" in reason
    assert "has no MOSS-TTS-Nano-100M/" not in reason


@pytest.mark.skipif(TORCH_INSTALLED, reason="torch is installed here, so 'torch not importable' cannot be observed")
@pytest.mark.parametrize("engine_cls", ENGINES)
def test_missing_names_torch_when_it_is_not_installed(engine_cls: type, tmp_path: Path) -> None:
    reason = engine_cls(weights_dir=str(_complete_weights(engine_cls, tmp_path))).missing()
    assert reason is not None and "torch is not installed" in reason
    assert "weights_dir" not in reason and "lacks" not in reason  # the weights themselves are complete


@pytest.mark.parametrize("engine_cls", ENGINES)
def test_missing_names_torch_when_find_spec_cannot_find_it(
    engine_cls: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    reason = engine_cls(weights_dir=str(_complete_weights(engine_cls, tmp_path))).missing()
    assert reason is not None and reason.startswith("torch is not installed")


@pytest.mark.parametrize("engine_cls", ENGINES)
def test_load_and_synthesize_raise_engine_not_installed(engine_cls: type, tmp_path: Path) -> None:
    engine = engine_cls(weights_dir=str(tmp_path / "nowhere"))
    with pytest.raises(EngineNotInstalled, match="does not exist"):
        engine.load()
    utterance = engine.utterance("default", None, {})
    with pytest.raises(EngineNotInstalled):
        engine.synthesize("Hello there.", utterance)
    engine.close()  # closing an engine that never loaded is fine


@pytest.mark.parametrize("engine_cls", ENGINES)
def test_bad_device_is_a_config_error(engine_cls: type) -> None:
    with pytest.raises(ValueError, match="device"):
        engine_cls(weights_dir=None, device="tpu")
    assert engine_cls(weights_dir=None, device="CUDA:1")._device == "cuda:1"


# --- voices ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine_cls", ENGINES)
def test_voices_are_default_plus_clips_with_sidecar_labels(engine_cls: type, voices_dir: Path) -> None:
    voices = {voice.id: voice for voice in engine_cls(weights_dir=None, voices_dir=str(voices_dir)).voices()}
    assert list(voices) == ["default", "alice", "bob", "carol"]
    assert (voices["alice"].name, voices["alice"].language, voices["alice"].gender) == ("Alice Liddell", "en-GB", "female")
    assert (voices["bob"].name, voices["bob"].language, voices["bob"].gender) == ("Bob", "en-US", None)
    assert engine_voice(voices["default"], engine_cls.id).labels == {"engine": engine_cls.id}


@pytest.mark.parametrize("engine_cls", ENGINES)
def test_voices_without_voices_dir_is_just_default(engine_cls: type, tmp_path: Path) -> None:
    assert [v.id for v in engine_cls(weights_dir=None).voices()] == ["default"]
    assert [v.id for v in engine_cls(weights_dir=None, voices_dir=str(tmp_path / "absent")).voices()] == ["default"]


# --- utterance() -----------------------------------------------------------------------------------


@pytest.mark.parametrize("engine_cls", ENGINES)
def test_unknown_voice(engine_cls: type, voices_dir: Path) -> None:
    engine = engine_cls(weights_dir=None, voices_dir=str(voices_dir))
    with pytest.raises(UnknownVoice, match="'zed'.*alice"):
        engine.utterance("zed", None, {})
    with pytest.raises(UnknownVoice):
        engine.utterance("notes", None, {})  # notes.txt is not a clip


@pytest.mark.parametrize("engine_cls", ENGINES)
def test_unknown_option_is_named(engine_cls: type) -> None:
    with pytest.raises(InvalidOption, match=r"provider_options\.pitch"):
        engine_cls(weights_dir=None).utterance("default", None, {"pitch": 2})


def test_chatterbox_rejects_options_of_moss_and_vice_versa() -> None:
    with pytest.raises(InvalidOption, match="top_p"):
        ChatterboxEngine(weights_dir=None).utterance("default", None, {"top_p": 0.9})
    with pytest.raises(InvalidOption, match="exaggeration"):
        MossTtsNanoEngine(weights_dir=None).utterance("default", None, {"exaggeration": 0.5})


@pytest.mark.parametrize("engine_cls", ENGINES)
@pytest.mark.parametrize("speed", [0.5, 1.25, 2.0])
def test_speed_other_than_one_is_refused(engine_cls: type, speed: float) -> None:
    with pytest.raises(InvalidOption, match="no speed control"):
        engine_cls(weights_dir=None).utterance("default", speed, {})


@pytest.mark.parametrize(
    "options, named",
    [
        ({"exaggeration": 2.5}, "exaggeration"),
        ({"exaggeration": 0.1}, "exaggeration"),
        ({"exaggeration": "high"}, "exaggeration"),
        ({"exaggeration": True}, "exaggeration"),
        ({"exaggeration": float("nan")}, "exaggeration"),
        ({"cfg_weight": 1.5}, "cfg_weight"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": 6}, "temperature"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": "7"}, "seed"),
    ],
)
def test_chatterbox_rejects_bad_values(options: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidOption, match=rf"provider_options\.{named}"):
        ChatterboxEngine(weights_dir=None).utterance("default", None, options)


@pytest.mark.parametrize(
    "options, named",
    [
        ({"temperature": 3.0}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.1}, "top_p"),
        ({"top_k": 0}, "top_k"),
        ({"repetition_penalty": 0.9}, "repetition_penalty"),
        ({"reference_text": ""}, "reference_text"),
        ({"reference_text": "What the default voice says."}, "reference_text"),  # no clip to describe
    ],
)
def test_moss_rejects_bad_values(options: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidOption, match=rf"provider_options\.{named}"):
        MossTtsNanoEngine(weights_dir=None).utterance("default", None, options)


@pytest.mark.parametrize("engine_cls", ENGINES)
@pytest.mark.parametrize(
    "value, message",
    [
        ("this is not base64!!", "not valid base64"),
        ("", "non-empty base64"),
        (12345, "non-empty base64"),
        (_b64(b"plain text, not audio at all"), "wav, flac or mp3"),
        ("data:audio/wav," + _b64(_wav_bytes()), "must be base64"),
    ],
)
def test_bad_reference_audio(engine_cls: type, value: Any, message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        engine_cls(weights_dir=None).utterance("default", None, {"reference_audio": value})


@pytest.mark.parametrize("engine_cls", ENGINES)
def test_oversize_reference_audio(engine_cls: type) -> None:
    limit = _torch.MAX_REFERENCE_BYTES
    header = _wav_bytes()
    engine = engine_cls(weights_dir=None)
    too_big = _b64(header + b"\x00" * (limit + 1 - len(header)))
    with pytest.raises(InvalidOption, match="larger than 10 MB"):
        engine.utterance("default", None, {"reference_audio": too_big})
    with pytest.raises(InvalidOption, match="larger than 10 MB"):  # refused before decoding
        engine.utterance("default", None, {"reference_audio": "A" * (2 * limit)})
    at_limit = header + b"\x00" * (limit - len(header))
    clip = engine.utterance("default", None, {"reference_audio": _b64(at_limit)}).options["reference_audio"]
    assert len(clip.data) == limit


def test_chatterbox_accepts_good_options(voices_dir: Path) -> None:
    engine = ChatterboxEngine(weights_dir=None, voices_dir=str(voices_dir))
    wav = _wav_bytes()
    utterance = engine.utterance(
        "alice",
        1.0,
        {
            "exaggeration": 0.7,
            "cfg_weight": 0,
            "temperature": 1,
            "seed": 42,
            "reference_audio": "data:audio/wav;base64," + _b64(wav),
        },
    )
    assert isinstance(utterance, Utterance) and utterance.voice.id == "alice" and utterance.speed == 1.0
    options = utterance.options
    assert (options["exaggeration"], options["cfg_weight"], options["temperature"], options["seed"]) == (0.7, 0.0, 1.0, 42)
    assert options["reference_audio"].data == wav and options["reference_audio"].suffix == ".wav"
    assert options["voice_clip"] == voices_dir / "alice.wav"
    assert "bytes" in repr(options["reference_audio"]) and "RIFF" not in repr(options["reference_audio"])
    defaults = engine.utterance("default", None, {}).options
    assert (defaults["exaggeration"], defaults["cfg_weight"], defaults["temperature"], defaults["seed"]) == (0.5, 0.5, 0.8, None)
    assert defaults["reference_audio"] is None and defaults["voice_clip"] is None


def test_moss_accepts_good_options_and_uses_clip_transcript(voices_dir: Path) -> None:
    engine = MossTtsNanoEngine(weights_dir=None, voices_dir=str(voices_dir))
    options = engine.utterance("alice", None, {"temperature": 0.7, "top_p": 0.9, "top_k": 30, "seed": 0}).options
    assert (options["temperature"], options["top_p"], options["top_k"], options["seed"]) == (0.7, 0.9, 30, 0)
    assert options["reference_text"] == "Down the rabbit hole." and options["voice_clip"] == voices_dir / "alice.wav"
    cloned = engine.utterance(
        "default", None, {"reference_audio": _b64(b"fLaC" + b"\x00" * 8), "reference_text": " Hi. "}
    ).options
    assert cloned["reference_audio"].suffix == ".flac" and cloned["reference_text"] == "Hi."


# --- shared helpers --------------------------------------------------------------------------------


def test_clip_file_is_deleted_even_when_the_model_fails() -> None:
    clip = _torch.decode_reference_audio(_b64(_wav_bytes()))
    seen: list[Path] = []
    with pytest.raises(RuntimeError):
        with _torch.clip_file(clip) as path:
            seen.append(path)
            assert path.read_bytes() == clip.data and path.suffix == ".wav"
            raise RuntimeError("model crashed")
    assert seen and not seen[0].exists()


@pytest.mark.parametrize(
    "wave_in, expected",
    [
        (np.array([[0.5, -0.5, 2.0]]), [0.5, -0.5, 1.0]),  # (1, N) -> N, clipped
        (np.array([[1.0, 0.0, -1.0, 0.2], [0.0, 0.0, 0.0, 0.2]]), [0.5, 0.0, -0.5, 0.2]),  # (2, N) channels averaged
        (np.array([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0]]), [0.5, 0.0, -0.5]),  # (N, 2)
        (np.array([np.nan, np.inf, -np.inf]), [0.0, 1.0, -1.0]),
    ],
)
def test_to_mono_float32(wave_in: np.ndarray, expected: list[float]) -> None:
    out = _torch.to_mono_float32(wave_in)
    assert out.dtype == np.float32 and out.ndim == 1
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_resample_changes_length_by_the_rate_ratio() -> None:
    audio = np.sin(np.linspace(0, 20, 4800)).astype(np.float32)
    assert len(_torch.resample(audio, 48_000, 24_000)) == 2400
    assert _torch.resample(audio, 24_000, 24_000) is audio


# --- the load/speak path against fake torch, chatterbox and transformers modules ---------------------------


def _module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attrs)
    return module


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    seeds: list[int] = []
    torch = _module(
        "torch",
        cuda=types.SimpleNamespace(
            is_available=lambda: False, manual_seed_all=seeds.append, empty_cache=lambda: None, is_bf16_supported=lambda: False
        ),
        manual_seed=seeds.append,
        no_grad=contextlib.nullcontext,
        device=lambda name: types.SimpleNamespace(type=name.split(":")[0], name=name),
        float32="float32",
        float16="float16",
        bfloat16="bfloat16",
    )
    for name in ("torch", "torchaudio", "sentencepiece"):
        monkeypatch.setitem(sys.modules, name, torch if name == "torch" else _module(name))
    return types.SimpleNamespace(seeds=seeds)


class _FakeTensor:
    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def detach(self) -> "_FakeTensor":
        return self

    def float(self) -> "_FakeTensor":
        return self

    def cpu(self) -> "_FakeTensor":
        return self

    def numpy(self) -> np.ndarray:
        return self.array


class _FakeChatterbox:
    loaded: list["_FakeChatterbox"] = []

    def __init__(self, ckpt_dir: str, device: str) -> None:
        self.ckpt_dir, self.device, self.sr = ckpt_dir, device, 24_000
        self.conds: Any = "builtin"
        self.prompts: list[tuple[Path, bytes]] = []
        self.calls: list[dict[str, Any]] = []

    @classmethod
    def from_local(cls, ckpt_dir: str, device: str) -> "_FakeChatterbox":
        model = cls(ckpt_dir, device)
        cls.loaded.append(model)
        return model

    def prepare_conditionals(self, wav_fpath: str, exaggeration: float = 0.5) -> None:
        data = Path(wav_fpath).read_bytes()
        self.prompts.append((Path(wav_fpath), data))
        self.conds = f"clone:{len(self.prompts)}"

    def generate(self, text: str, audio_prompt_path: str | None = None, exaggeration=0.5, cfg_weight=0.5, temperature=0.8):
        assert audio_prompt_path is None  # the engine sets model.conds itself
        self.calls.append(
            {
                "text": text,
                "conds": self.conds,
                "exaggeration": exaggeration,
                "cfg_weight": cfg_weight,
                "temperature": temperature,
            }
        )
        return _FakeTensor(np.full((1, 2400), 1.5, dtype=np.float32))


@pytest.fixture
def fake_chatterbox(fake_torch: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    _FakeChatterbox.loaded = []
    monkeypatch.setitem(sys.modules, "chatterbox", _module("chatterbox"))
    monkeypatch.setitem(sys.modules, "chatterbox.tts", _module("chatterbox.tts", ChatterboxTTS=_FakeChatterbox))
    return fake_torch


def test_chatterbox_drives_the_model_per_voice(fake_chatterbox: types.SimpleNamespace, tmp_path: Path, voices_dir: Path) -> None:
    engine = ChatterboxEngine(weights_dir=str(_chatterbox_weights(tmp_path / "w")), voices_dir=str(voices_dir))
    assert engine.missing() is None
    engine.load()
    engine.load()  # idempotent
    assert len(_FakeChatterbox.loaded) == 1
    model = _FakeChatterbox.loaded[0]
    assert (model.ckpt_dir, model.device) == (str(tmp_path / "w"), "cpu")

    reference = _wav_bytes(0.2)
    cloned = engine.utterance("default", None, {"reference_audio": _b64(reference), "seed": 7, "exaggeration": 0.9})
    audio = engine.synthesize("Hello there.", cloned)
    assert audio.dtype == np.float32 and audio.shape == (2400,) and float(audio.max()) == 1.0
    assert model.calls[-1]["conds"] == "clone:1" and model.calls[-1]["exaggeration"] == 0.9
    assert model.prompts[0][1] == reference and not model.prompts[0][0].exists()  # temp file gone
    assert fake_chatterbox.seeds == [7]

    engine.synthesize("Second piece of the same request.", cloned)
    assert len(model.prompts) == 1 and model.calls[-1]["conds"] == "clone:1"  # conditioning cached

    engine.synthesize("Back to the built-in voice.", engine.utterance("default", None, {}))
    assert model.calls[-1]["conds"] == "builtin"  # the clone did not leak

    engine.synthesize("A clip voice.", engine.utterance("alice", None, {}))
    assert model.prompts[-1][0] == voices_dir / "alice.wav" and model.calls[-1]["conds"] == "clone:2"
    assert engine.synthesize("  ", engine.utterance("default", None, {})).shape == (0,)
    assert len(model.calls) == 4

    engine.close()
    assert engine.missing() is None  # weights and (fake) packages are still there; it would load again


def test_chatterbox_load_failure_is_engine_not_installed(
    fake_chatterbox: types.SimpleNamespace, tmp_path: Path, monkeypatch
) -> None:
    def broken(ckpt_dir: str, device: str) -> None:
        raise RuntimeError("size mismatch for t3.tfmr")

    monkeypatch.setattr(_FakeChatterbox, "from_local", staticmethod(broken))
    engine = ChatterboxEngine(weights_dir=str(_chatterbox_weights(tmp_path)))
    with pytest.raises(EngineNotInstalled, match="size mismatch"):
        engine.load()


class _FakeMoss:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.moved: tuple[Any, Any] | None = None
        self.attention: tuple[str, str] | None = None

    def to(self, device: Any = None, dtype: Any = None) -> "_FakeMoss":
        self.moved = (device, dtype)
        return self

    def _set_attention_implementation(self, attn: str, local_attn_implementation: str) -> None:
        self.attention = (attn, local_attn_implementation)

    def eval(self) -> "_FakeMoss":
        return self

    def inference(self, **kwargs: Any) -> dict[str, Any]:
        prompt = kwargs["prompt_audio_path"]
        kwargs["prompt_bytes"] = Path(prompt).read_bytes() if prompt else None
        Path(kwargs["output_audio_path"]).write_bytes(b"RIFF")  # upstream writes the wav too
        self.calls.append(kwargs)
        left, right = np.full(4800, 0.5, dtype=np.float32), np.full(4800, -0.1, dtype=np.float32)
        return {"waveform": _FakeTensor(np.stack([left, right])), "sample_rate": 48_000}


def test_moss_drives_the_model_per_voice(
    fake_torch: types.SimpleNamespace, tmp_path: Path, voices_dir: Path, monkeypatch
) -> None:
    model, audio_tokenizer = _FakeMoss(), _FakeMoss()
    loads: list[tuple[str, dict[str, Any]]] = []

    def loader(result: _FakeMoss) -> Any:
        return types.SimpleNamespace(from_pretrained=lambda path, **kw: loads.append((path, kw)) or result)

    transformers = _module("transformers", AutoModelForCausalLM=loader(model), AutoModel=loader(audio_tokenizer))
    monkeypatch.setitem(sys.modules, "transformers", transformers)
    weights = _moss_weights(tmp_path / "w")
    engine = MossTtsNanoEngine(weights_dir=str(weights), voices_dir=str(voices_dir))
    assert engine.missing() is None
    engine.load()
    assert [path for path, _ in loads] == [str(weights / "MOSS-TTS-Nano-100M"), str(weights / "MOSS-Audio-Tokenizer-Nano")]
    assert all(kw == {"trust_remote_code": True, "local_files_only": True} for _, kw in loads)
    assert model.moved is not None and model.moved[1] == "float32" and model.attention == ("sdpa", "sdpa")

    audio = engine.synthesize("Hello there.", engine.utterance("default", None, {}))
    assert audio.dtype == np.float32 and audio.shape == (4800,)
    np.testing.assert_allclose(audio, 0.2, atol=1e-6)  # the two channels averaged
    call = model.calls[-1]
    assert call["mode"] == "continuation" and call["prompt_audio_path"] is None and call["prompt_text"] is None
    assert call["audio_tokenizer"] is audio_tokenizer and call["text_tokenizer_path"] == str(weights / "MOSS-TTS-Nano-100M")
    assert (call["text_temperature"], call["audio_temperature"], call["audio_top_k"]) == (1.0, 0.8, 25)
    assert not Path(call["output_audio_path"]).parent.exists()  # its temp directory is removed

    reference = _wav_bytes(0.2)
    options = {"reference_audio": _b64(reference), "reference_text": "Hi.", "temperature": 0.6, "seed": 3}
    engine.synthesize("Cloned.", engine.utterance("default", None, options))
    call = model.calls[-1]
    assert call["mode"] == "voice_clone" and call["prompt_bytes"] == reference and call["prompt_text"] == "Hi."
    assert not Path(call["prompt_audio_path"]).exists()
    assert (call["text_temperature"], call["audio_temperature"]) == (0.6, 0.6) and fake_torch.seeds == [3]

    engine.synthesize("A clip voice.", engine.utterance("alice", None, {}))
    call = model.calls[-1]
    assert call["prompt_audio_path"] == str(voices_dir / "alice.wav") and call["prompt_text"] == "Down the rabbit hole."
    assert (voices_dir / "alice.wav").exists()  # a voices_dir clip is never deleted


# --- the shared TorchEngine skeleton ---------------------------------------------------------------


@pytest.mark.parametrize("engine_cls", ENGINES)
def test_engine_id_and_chunk_sizes_come_from_the_constructor(engine_cls: type) -> None:
    assert engine_cls(weights_dir=None).id == engine_cls.id
    engine = engine_cls("node-a", weights_dir=None, first_chunk_chars=20, max_chunk_chars=120, unrelated_setting=1)
    assert (engine.id, engine.first_chunk_chars, engine.max_chunk_chars) == ("node-a", 20, 120)
    assert (engine_cls.first_chunk_chars, engine_cls.max_chunk_chars) == (60, 300)  # the class defaults are untouched


def test_unknown_option_lists_what_each_engine_takes() -> None:
    with pytest.raises(InvalidOption, match=r"it takes: exaggeration, cfg_weight, temperature, seed, reference_audio\)"):
        ChatterboxEngine(weights_dir=None).utterance("default", None, {"pitch": 2})
    takes = "temperature, top_p, top_k, repetition_penalty, seed, reference_audio, reference_text"
    with pytest.raises(InvalidOption, match=rf"it takes: {takes}\)"):
        MossTtsNanoEngine(weights_dir=None).utterance("default", None, {"pitch": 2})


def test_moss_options_absent_stay_none() -> None:
    options = MossTtsNanoEngine(weights_dir=None).utterance("default", None, {}).options
    assert options == {
        "temperature": None,
        "top_p": None,
        "top_k": None,
        "repetition_penalty": None,
        "seed": None,
        "reference_audio": None,
        "voice_clip": None,
        "reference_text": None,
    }


def test_chatterbox_without_builtin_voice_is_not_installed(
    fake_chatterbox: types.SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_conds(ckpt_dir: str, device: str) -> _FakeChatterbox:
        model = _FakeChatterbox(ckpt_dir, device)
        model.conds = None
        return model

    monkeypatch.setattr(_FakeChatterbox, "from_local", staticmethod(no_conds))
    engine = ChatterboxEngine(weights_dir=str(_chatterbox_weights(tmp_path)))
    with pytest.raises(EngineNotInstalled, match=r"conds\.pt gave no built-in voice") as raised:
        engine.load()
    assert "loading weights" not in str(raised.value)  # the engine's own reason, not wrapped as a load failure
    assert engine._model is None


def test_closed_engine_reloads_and_a_failed_inference_forgets_the_model(
    fake_torch: types.SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models: list[_FakeMoss] = []

    def new_model(path: str, **kw: Any) -> _FakeMoss:
        models.append(_FakeMoss())
        return models[-1]

    loader = types.SimpleNamespace(from_pretrained=new_model)
    monkeypatch.setitem(sys.modules, "transformers", _module("transformers", AutoModelForCausalLM=loader, AutoModel=loader))
    engine = MossTtsNanoEngine(weights_dir=str(_moss_weights(tmp_path)))
    utterance = engine.utterance("default", None, {})
    engine.synthesize("Hello.", utterance)
    assert len(models) == 2  # the model and its audio tokenizer
    engine.close()
    assert engine._model is None and engine._audio_tokenizer is None
    engine.synthesize("Hello again.", utterance)
    assert len(models) == 4

    def crash(**kwargs: Any) -> None:
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(models[-2], "inference", crash)
    with pytest.raises(RuntimeError, match="device-side assert"):
        engine.synthesize("Crash.", utterance)
    assert engine._model is None and engine._audio_tokenizer is None
    engine.synthesize("Recovered.", utterance)
    assert len(models) == 6
