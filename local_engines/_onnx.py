"""Shared onnxruntime set-up for the ONNX engines (Kokoro, Piper)."""

from __future__ import annotations

import importlib.util
import os

import voxrouter.local_engines  # noqa: F401  (sets ORT_DISABLE_TELEMETRY before onnxruntime loads)


def onnxruntime_missing() -> str | None:
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed"
    return None


def session(model: str | bytes, *, threads: int | None, device: str = "auto"):  # -> onnxruntime.InferenceSession
    """A session on CUDA when asked for (or available under "auto"), else on `threads` CPU threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    available = ort.get_available_providers()
    providers = ["CPUExecutionProvider"]
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    elif device == "cuda":
        raise RuntimeError("device 'cuda' was asked for but onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    return ort.InferenceSession(model, sess_options=options, providers=providers)
