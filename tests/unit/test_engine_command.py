"""`voxrouter engine serve`'s arguments, checked before anything is served; the engine
service itself is tests/e2e/test_engine_server.py."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from voxrouter.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]


def test_cli_unknown_engine_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.delenv("VOXROUTER_CONFIG", raising=False)
    result = CliRunner().invoke(cli_main, ["engine", "serve", "--engine", "nope"])
    assert result.exit_code == 2, result.output
    assert "unknown engine 'nope'" in result.output and "kokoro" in result.output and "piper" in result.output

    # The engines come from the config given (here through VOXROUTER_CONFIG).
    raw = yaml.safe_load(Path(ROOT / "config" / "default.yaml").read_text())
    raw["providers"]["local"]["options"]["engines"] = {"joe": {"engine": "piper"}}
    path = tmp_path / "engines.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("VOXROUTER_CONFIG", str(path))
    result = CliRunner().invoke(cli_main, ["engine", "serve", "--engine", "piper"])
    assert result.exit_code == 2 and "configured: joe" in result.output, result.output
