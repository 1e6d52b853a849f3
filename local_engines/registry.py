"""Engine kinds by name, imported only when configured (torch engines pull in heavy modules)."""

from __future__ import annotations

import importlib
from typing import Any

from voxrouter.local_engines.base import Engine

ENGINE_KINDS: dict[str, str] = {
    "kokoro": "voxrouter.local_engines.kokoro:KokoroEngine",
    "piper": "voxrouter.local_engines.piper:PiperEngine",
    "hibari": "voxrouter.local_engines.hibari:HibariEngine",
    "chatterbox": "voxrouter.local_engines.chatterbox:ChatterboxEngine",
    "moss-tts-nano": "voxrouter.local_engines.moss:MossTtsNanoEngine",
}


def build_engine(kind: str, engine_id: str, settings: dict[str, Any]) -> Engine:
    if kind not in ENGINE_KINDS:
        raise ValueError(f"unknown engine kind {kind!r} (known: {', '.join(ENGINE_KINDS)})")
    module_name, _, class_name = ENGINE_KINDS[kind].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(engine_id, **settings)
