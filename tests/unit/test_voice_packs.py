"""Kokoro's voice packs from the kokoro-js tarball: pinned, converted, and a clear fallback."""

from __future__ import annotations

import hashlib
import io
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest

from voxrouter.local_engines import voice_packs
from voxrouter.local_engines.base import UnknownVoice
from voxrouter.local_engines.kokoro import KokoroEngine


def _tarball(path: Path, voices: dict[str, np.ndarray], *, extra: dict[str, bytes] | None = None) -> str:
    with tarfile.open(path, "w:gz") as archive:
        members = {f"package/voices/{name}.bin": array.astype("<f4").tobytes() for name, array in voices.items()}
        members["package/LICENSE"] = b"Apache License 2.0 (kokoro-js)"
        members.update(extra or {})
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(voice_packs, "_warned", set())


def test_the_pinned_tarball_becomes_the_engines_voices_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    heart = rng.standard_normal((510, 256)).astype(np.float32)
    sha = _tarball(tmp_path / "k.tgz", {"af_heart": heart, "bm_george": heart * 2})
    monkeypatch.setattr(voice_packs, "KOKORO_JS_SHA256", sha)
    monkeypatch.setenv(voice_packs.TARBALL_ENV, str(tmp_path / "k.tgz"))
    base = tmp_path / "ja.npz"
    np.savez(base, jf_alpha=np.ones((510, 1, 256), dtype=np.float32))

    out = voice_packs.kokoro_voices(tmp_path / "cache", base=base)

    assert out == voice_packs.pack_path(tmp_path / "cache")
    with np.load(out) as archive:
        assert sorted(archive.files) == ["af_heart", "bm_george", "jf_alpha"]
        assert archive["af_heart"].shape == (510, 1, 256)
        assert np.array_equal(archive["af_heart"][:, 0, :], heart)
    assert (tmp_path / "cache" / "kokoro-js-LICENSE").read_bytes().startswith(b"Apache License")
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.endswith(".tmp")]
    # Built once: a second call does not read the tarball again.
    (tmp_path / "k.tgz").unlink()
    assert voice_packs.kokoro_voices(tmp_path / "cache", base=base) == out


def test_a_tarball_that_is_not_the_pinned_one_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _tarball(tmp_path / "k.tgz", {"af_heart": np.zeros((510, 256), dtype=np.float32)})
    monkeypatch.setenv(voice_packs.TARBALL_ENV, str(tmp_path / "k.tgz"))
    with caplog.at_level(logging.WARNING, logger="voxrouter.engines"):
        assert voice_packs.kokoro_voices(tmp_path / "cache") is None
    assert "not the pinned" in caplog.text and "English voice packs are not installed" in caplog.text
    assert not (tmp_path / "cache").exists()


def test_a_voice_of_the_wrong_size_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    sha = _tarball(tmp_path / "k.tgz", {}, extra={"package/voices/af_bad.bin": b"\0" * 1024})
    monkeypatch.setattr(voice_packs, "KOKORO_JS_SHA256", sha)
    monkeypatch.setenv(voice_packs.TARBALL_ENV, str(tmp_path / "k.tgz"))
    with caplog.at_level(logging.WARNING, logger="voxrouter.engines"):
        assert voice_packs.kokoro_voices(tmp_path / "cache") is None
    assert "not a [510 x 256] float32 pack" in caplog.text


def test_without_npm_it_says_so_once_and_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(voice_packs.TARBALL_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger="voxrouter.engines"):
        assert voice_packs.kokoro_voices(tmp_path, npm="no-such-npm-here") is None
        assert voice_packs.kokoro_voices(tmp_path, npm="no-such-npm-here") is None
    warnings = [r for r in caplog.records if "English voice packs are not installed" in r.getMessage()]
    assert len(warnings) == 1 and "no-such-npm-here is not installed" in warnings[0].getMessage()


def test_an_english_voice_without_its_pack_gets_a_same_gender_stand_in(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    voices = tmp_path / "ja.npz"
    np.savez(voices, jf_alpha=np.zeros((510, 1, 256), np.float32), jm_kumo=np.zeros((510, 1, 256), np.float32))
    engine = KokoroEngine(voices_path=str(voices))
    with caplog.at_level(logging.WARNING, logger="voxrouter.engines"):
        assert engine.utterance("af_heart", None, {}).voice.id == "jf_alpha"
        assert engine.utterance("bm_george", None, {}).voice.id == "jm_kumo"
    assert "voice af_heart is not installed; jf_alpha speaks for it" in caplog.text
    with pytest.raises(UnknownVoice, match="no voice 'af_nobody'"):
        engine.utterance("af_nobody", None, {})  # not a kokoro-js voice: a typo stays an error


def test_stand_in_prefers_the_same_language() -> None:
    assert voice_packs.stand_in("bf_emma", ["af_heart", "bf_alice", "am_adam"]) == "bf_alice"
    assert voice_packs.stand_in("am_onyx", ["af_heart", "bf_alice"]) == "af_heart"  # no male installed: any voice
    assert voice_packs.stand_in("xx_none", ["af_heart"]) is None
