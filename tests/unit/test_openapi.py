"""openapi.yaml is generated from the code; live responses against it are tests/integration/test_openapi.py."""

from __future__ import annotations

from pathlib import Path

from voxrouter.router.http.openapi import render

SPEC_PATH = Path(__file__).resolve().parents[2] / "openapi.yaml"


def test_committed_spec_is_generated_from_code():
    assert SPEC_PATH.read_text() == render(), "run: python -m voxrouter.router.http.openapi > openapi.yaml"
