"""The client package (voxrouter/) stands alone: it imports nothing of the server, and only the
standard library, httpx and click (its whole `pip install voxrouter`); the server's commands
are listed without being imported and loaded from one marked place. The fresh-venv install is
tests/e2e/test_client_only_install.py."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from voxrouter import cli

CLIENT = Path(cli.__file__).parent
SERVER_PACKAGES = ("voxrouter.router", "voxrouter.providers", "voxrouter.local_engines", "voxrouter.config")
CLIENT_DEPENDENCIES = {"httpx", "click"}  # pyproject.toml [project] dependencies
# The one place the client may reach the server: the lazy loader of `serve`, `engine` and `admin`.
SERVER_LOADER = ("cli.py", "load_server_command")


def _modules() -> list[Path]:
    return sorted(CLIENT.glob("*.py"))


def _imports(tree: ast.Module) -> list[tuple[str, ast.AST]]:
    """Every module an import statement anywhere in `tree` names (`from a import b` names `a` and `a.b`)."""
    found: list[tuple[str, ast.AST]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "voxrouter/ uses absolute imports"
            found.append((node.module or "", node))
            found += [(f"{node.module}.{alias.name}", node) for alias in node.names]
    return found


def _is_server(module: str) -> bool:
    return any(module == package or module.startswith(package + ".") for package in SERVER_PACKAGES)


def _dynamic_imports(tree: ast.Module) -> list[tuple[str, str]]:
    """(function, what it passes) for each `importlib.import_module(...)` or `__import__(...)` call."""
    calls: list[tuple[str, str]] = []
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in {"importlib.import_module", "__import__"}:
                calls.append((function.name, ast.unparse(node.args[0])))
    return calls


@pytest.mark.parametrize("path", _modules(), ids=lambda path: path.name)
def test_no_client_module_imports_the_server(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    wrong = [f"line {node.lineno}: {module}" for module, node in _imports(tree) if _is_server(module)]
    assert not wrong, f"{path.name} imports the server"
    for function, argument in _dynamic_imports(tree):
        assert (path.name, function) == SERVER_LOADER, f"{path.name}:{function} imports {argument} dynamically"


@pytest.mark.parametrize("path", _modules(), ids=lambda path: path.name)
def test_client_modules_need_only_the_base_dependencies(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for module, node in _imports(tree):
        top = module.partition(".")[0]
        if isinstance(node, ast.ImportFrom) and module != node.module:
            continue  # `from a import b`: `a` is what must be installed
        assert top in sys.stdlib_module_names or top in CLIENT_DEPENDENCIES or top in {"voxrouter", "__future__"}, (
            f"{path.name} line {node.lineno} imports {module}: not in `pip install voxrouter`"
        )


def test_the_server_loader_is_the_marked_place():
    tree = ast.parse((CLIENT / SERVER_LOADER[0]).read_text(encoding="utf-8"))
    assert _dynamic_imports(tree) == [(SERVER_LOADER[1], "_SERVER_MODULE")]
    assert cli._SERVER_MODULE == "voxrouter.router.server_commands"


def test_the_listing_of_server_commands_matches_the_commands():
    from voxrouter.router.server_commands import COMMANDS

    assert set(COMMANDS) == set(cli.SERVER_COMMANDS)
    for name, command in COMMANDS.items():
        listed = click.Command(name, help=cli.SERVER_COMMANDS[name])
        for limit in (45, 200):
            assert listed.get_short_help_str(limit) == command.get_short_help_str(limit), name
        assert cli.load_server_command(name) is command


def test_help_lists_every_command_without_loading_the_server(monkeypatch):
    def refuse(name: str) -> click.Command:
        raise AssertionError(f"--help loaded {name}")

    monkeypatch.setattr(cli, "load_server_command", refuse)
    result = CliRunner().invoke(cli.main, ["--help"])
    assert result.exit_code == 0, result.output
    listed = [line.split()[0] for line in result.output.split("Commands:\n")[1].splitlines() if line.strip()]
    assert listed == sorted([*(command.name for command in cli.user_commands.COMMANDS), *cli.SERVER_COMMANDS])


def test_a_server_command_without_the_server_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(cli, "missing_server_requirements", lambda: ["starlette", "uvicorn", "pydantic", "av", "numpy"])
    for args in (["serve"], ["serve", "--help"], ["admin", "create-key", "--org", "o", "--name", "n"], ["engine", "serve"]):
        result = CliRunner().invoke(cli.main, args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr == (
            f"Error: `voxrouter {args[0]}` needs the server, which is not installed here "
            "(missing: starlette, uvicorn, pydantic and 2 more). Install voxrouter[server]: pip install 'voxrouter[server]'\n"
        )
    user = CliRunner().invoke(cli.main, ["voices"], env={"VOXROUTER_API_KEY": ""})
    assert user.exit_code == 2 and "VOXROUTER_API_KEY is not set" in user.stderr  # the user commands do not care


def test_the_installed_server_extra_is_complete():
    assert cli.missing_server_requirements() == []  # `pip install -e '.[test]'` pulls voxrouter[server]
