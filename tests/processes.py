"""Real `voxrouter serve` processes for tests: started on a free loopback port with a given
config and database, killed (SIGKILL) or stopped, and always reaped.

Unlike `_serve` in test_serve_process.py, the gateway's output goes to a log file rather
than an unread pipe (a chatty gateway would block on a full pipe), and it is attached to
the failure when the process dies early.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from voxrouter.router.config import Config

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(config: Config, path: Path) -> Path:
    """The YAML that VOXROUTER_CONFIG points at (provider keys inline, as emulated_config sets them)."""
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=False), sort_keys=False), encoding="utf-8")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The runner's environment without provider keys or VoxRouter settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL")) and not k.startswith("VOXROUTER_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


class GatewayProcess:
    """`python -m voxrouter.cli serve` on its own port; use as a context manager so it is always reaped."""

    def __init__(
        self,
        config_path: Path,
        database_url: str,
        log_path: Path,
        port: int | None = None,
        env: dict[str, str] | None = None,
        workers: int = 1,
    ) -> None:
        self.env = env or {}
        self.workers = workers
        self.config_path = config_path
        self.database_url = database_url
        self.log_path = log_path
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> "GatewayProcess":
        env = clean_env(VOXROUTER_CONFIG=str(self.config_path), VOXROUTER_DATABASE_URL=self.database_url, **self.env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "voxrouter.cli", "serve", "--port", str(self.port), "--log-level", "warning", "--workers", str(self.workers)],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until it answers HTTP (uvicorn accepts only after the lifespan, so the sweeper runs by then)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            try:
                httpx.get(self.url + "/v1/status", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.kill()
        raise AssertionError(f"gateway did not start in {timeout_s}s:\n{self.log()}")

    def create_key(self, credit_usd: str = "5") -> str:
        """A fresh organization's API key in this gateway's database (`voxrouter admin create-key`)."""
        env = clean_env(VOXROUTER_CONFIG=str(self.config_path), VOXROUTER_DATABASE_URL=self.database_url, **self.env)
        done = subprocess.run(
            [sys.executable, "-m", "voxrouter.cli", "admin", "create-key", "--org", f"org-{self.port}", "--name", "test", "--credit-usd", credit_usd],
            env=env, cwd=ROOT, capture_output=True, text=True, check=True,
        )
        return done.stdout.strip()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no settlement; what it held stays held in the database."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-8000:]
        except OSError:
            return ""

    def __enter__(self) -> "GatewayProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()
