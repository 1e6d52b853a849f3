"""The import contracts in `.importlinter` hold, and a wrong arrow breaks them.

import-linter's graph (grimp) cannot follow `[tool.setuptools] package-dir`: in the
editable install `voxrouter.router` lives in router/, outside voxrouter/, and grimp finds
no such module. So each test lays the installed layout out for real in a temporary folder
(every package's .py files where its import name says) and runs `lint-imports` on it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / ".importlinter"
LAYERS = "Server layers run one way: router -> providers -> local_engines"
CLIENT = "The client and user CLI import nothing of the server"


def _installed_layout(into: Path) -> Path:
    """Copy the .py files of every package in pyproject's package-dir to where its import name puts it."""
    package_dirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for name, folder in sorted(package_dirs.items()):  # "voxrouter" before "voxrouter.router"
        shutil.copytree(
            REPO / folder,
            into.joinpath(*name.split(".")),
            ignore=lambda where, names: [n for n in names if n == "__pycache__" or not (n.endswith(".py") or (Path(where) / n).is_dir())],
            dirs_exist_ok=True,
        )
    return into


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo", str(CONFIG)], cwd=tree, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_import_contracts_hold(tmp_path: Path) -> None:
    tree = _installed_layout(tmp_path)
    assert (tree / "voxrouter" / "router" / "http" / "app.py").is_file()
    assert (tree / "voxrouter" / "providers" / "base.py").is_file() and (tree / "voxrouter" / "client.py").is_file()
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{LAYERS} KEPT" in result.stdout and f"{CLIENT} KEPT" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken", "arrow"),
    [
        ("providers/base.py", "import voxrouter.router", LAYERS, "voxrouter.providers is not allowed to import voxrouter.router"),
        ("local_engines/runner.py", "import voxrouter.providers.base", LAYERS, "voxrouter.local_engines is not allowed to import voxrouter.providers"),
        ("money.py", "import voxrouter.router.config", CLIENT, "voxrouter.money is not allowed to import voxrouter.router"),
    ],
)
def test_a_wrong_arrow_breaks_its_contract(tmp_path: Path, module: str, line: str, broken: str, arrow: str) -> None:
    tree = _installed_layout(tmp_path)
    path = tree / "voxrouter" / module
    path.write_text(path.read_text() + f"\n{line}\n")
    result = _lint(tree)
    assert result.returncode != 0, result.stdout
    assert f"{broken} BROKEN" in result.stdout and arrow in result.stdout, result.stdout
    kept = CLIENT if broken == LAYERS else LAYERS
    assert f"{kept} KEPT" in result.stdout, result.stdout
