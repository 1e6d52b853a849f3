"""The CLI's saved state, `~/.voxrouter/config.json`: the gateway's URL and the session from
`voxrouter login`. The session is a bearer credential, so the file is 0600 in a 0700 directory
and is replaced atomically (never left half-written, never briefly world-readable)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TypedDict

CONFIG_DIR_ENV = "VOXROUTER_CONFIG_DIR"
SESSION_FIELDS = ("session_token", "expires_at", "user_id")


class SavedConfig(TypedDict, total=False):
    base_url: str
    session_token: str
    expires_at: str
    user_id: str


class ConfigError(Exception):
    """The config file exists but cannot be read as a JSON object."""


def config_dir() -> Path:
    override = os.environ.get(CONFIG_DIR_ENV)
    return Path(override) if override else Path.home() / ".voxrouter"


def config_path() -> Path:
    return config_dir() / "config.json"


def load() -> SavedConfig:
    path = config_path()
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw)
    except ValueError:
        raise ConfigError(f"{path} is not valid JSON; fix or delete it") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object; fix or delete it")
    return SavedConfig(**{k: v for k, v in data.items() if k in SavedConfig.__annotations__ and isinstance(v, str)})  # type: ignore[typeddict-item]


def save(config: SavedConfig) -> Path:
    directory = config_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = directory / "config.json"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".config.", suffix=".tmp")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(config, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def forget_session() -> None:
    """Drop the saved session, keeping the base URL."""
    config = load()
    if any(field in config for field in SESSION_FIELDS):
        save(SavedConfig(**{k: v for k, v in config.items() if k not in SESSION_FIELDS}))  # type: ignore[typeddict-item]
