"""`pip install voxrouter` without extras, in a fresh virtual environment: the client and the
user CLI work and talk to a gateway, none of the server's dependencies is installed or
imported, and the server's commands say how to install the server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import venv
from pathlib import Path

import httpx
import pytest

from tests.processes import ROOT

# What the distribution is built from (pyproject.toml's package-dir); copied so that the build
# writes nothing into the checkout.
SOURCES = ("pyproject.toml", "README.md", "voxrouter", "router", "providers", "local_engines", "config")
SERVER_ONLY = ("starlette", "uvicorn", "pydantic", "av", "numpy", "onnxruntime", "yaml", "stripe")
INSTALL_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("client-only")
    source = tmp / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    install = subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", str(source)],
        env=_env(env_dir), cwd=tmp, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return env_dir


def _env(env_dir: Path, **extra: str) -> dict[str, str]:
    """This runner's environment with the fresh venv first on PATH and nothing of the checkout's."""
    env = {
        k: v for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"} and not k.startswith("VOXROUTER_") and not k.endswith("_API_KEY")
    }
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(env_dir)
    env.update(extra)
    return env


def _run(env_dir: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    # Never the checkout as working directory: its voxrouter/ folder would shadow the installed one.
    return subprocess.run(list(argv), env=_env(env_dir, **env), cwd=env_dir, capture_output=True, text=True, timeout=60)


def test_only_the_client_dependencies_are_installed(client_venv: Path):
    script = "import importlib.util, json; print(json.dumps([m for m in %r if importlib.util.find_spec(m)]))" % (SERVER_ONLY,)
    found = _run(client_venv, "python", "-c", script)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == []
    where = _run(client_venv, "python", "-c", "import voxrouter; print(voxrouter.__file__)")
    assert where.stdout.startswith(str(client_venv)), where.stdout  # the installed package, not the checkout


def test_the_distribution_installs_no_generic_top_level_name(client_venv: Path):
    script = (
        "import importlib.metadata as m, json;"
        "files = m.distribution('voxrouter').files;"
        "print(json.dumps(sorted({f.parts[0] for f in files if f.suffix == '.py' and len(f.parts) > 1})))"
    )
    tops = _run(client_venv, "python", "-c", script)
    assert tops.returncode == 0, tops.stderr
    assert json.loads(tops.stdout) == ["voxrouter"]
    server = _run(client_venv, "python", "-c", "import voxrouter.router.http.app; print('present')")
    assert "present" not in server.stdout  # the files are there, their dependencies are not
    assert "ModuleNotFoundError" in server.stderr


def test_importing_the_client_loads_nothing_of_the_server(client_venv: Path):
    check = _run(
        client_venv, "python", "-c",
        "import voxrouter, sys; from voxrouter import Client; assert not {'onnxruntime','av','numpy'} & set(sys.modules)",
    )
    assert check.returncode == 0, check.stderr
    script = (
        "import sys, json; import voxrouter, voxrouter.client, voxrouter.cli; from voxrouter import AsyncClient, Client, VoxRouterError;"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('voxrouter.') or m.partition('.')[0] in %r)))" % (SERVER_ONLY,)
    )
    loaded = _run(client_venv, "python", "-c", script)
    assert loaded.returncode == 0, loaded.stderr
    assert not [m for m in json.loads(loaded.stdout) if not m.startswith("voxrouter.") or m.startswith("voxrouter.router")]


def test_the_cli_lists_every_command(client_venv: Path):
    for argv in (["voxrouter", "--help"], ["python", "-m", "voxrouter.cli", "--help"]):
        run = _run(client_venv, *argv)
        assert run.returncode == 0, run.stderr
        listed = [line.split()[0] for line in run.stdout.split("Commands:\n")[1].splitlines() if line.strip()]
        assert {"speech", "voices", "login", "keys", "billing", "usage", "serve", "engine", "admin"} <= set(listed)


@pytest.mark.parametrize(
    "args",
    [["serve"], ["serve", "--port", "8080"], ["engine", "serve", "--engine", "kokoro"], ["admin", "create-key", "--org", "o", "--name", "n"]],
)
def test_server_commands_say_to_install_the_server(client_venv: Path, args: list[str]):
    run = _run(client_venv, "voxrouter", *args)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.startswith(f"Error: `voxrouter {args[0]}` needs the server, which is not installed here (missing: ")
    assert run.stderr.endswith(". Install voxrouter[server]: pip install 'voxrouter[server]'\n")


@pytest.mark.parametrize("database_engine", ["sqlite"], indirect=True)
def test_the_user_cli_talks_to_a_gateway(client_venv: Path, gateway, api_key: str):
    run = _run(client_venv, "voxrouter", "voices", "--json", VOXROUTER_BASE_URL=gateway.url, VOXROUTER_API_KEY=api_key)
    assert run.returncode == 0, run.stderr
    wire = httpx.get(gateway.url + "/v1/voices", headers={"Authorization": f"Bearer {api_key}"}).json()
    assert json.loads(run.stdout) == wire
    no_key = _run(client_venv, "voxrouter", "voices", VOXROUTER_BASE_URL=gateway.url)
    assert no_key.returncode == 2 and "VOXROUTER_API_KEY is not set" in no_key.stderr

