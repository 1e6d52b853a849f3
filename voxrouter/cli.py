"""The `voxrouter` command: the user commands of voxrouter/user_commands.py (speech, voices,
login, keys, billing, usage, ...) and the server's `serve`, `engine` and `admin`, which live in
the server (voxrouter.router.server_commands) and are imported only when one of them is invoked:
`voxrouter --help` and every user command run on the client-only install."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys

import click

from voxrouter import user_commands

SERVER_EXTRA = "server"
SERVER_INSTALL = "pip install 'voxrouter[server]'"
_SERVER_MODULE = "voxrouter.router.server_commands"
# What `voxrouter --help` lists for the server's commands without importing them; a unit test
# keeps each line equal to the command's own help.
SERVER_COMMANDS: dict[str, str] = {
    "admin": "Offline operator tasks against the configured database.",
    "engine": "Run local engines as an HTTP service that gateways reach through an engine's `url:`.",
    "serve": "Run the gateway (database from VOXROUTER_DATABASE_URL, config from VOXROUTER_CONFIG).",
}
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']server["']""")
_REQUIREMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class _Main(click.Group):
    """The user commands, plus the server's commands loaded on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *SERVER_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in SERVER_COMMANDS:
            return load_server_command(cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own listing, except that a server command is shown from its summary, not loaded.
        listed: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name) or click.Command(name, help=SERVER_COMMANDS[name])
            if not command.hidden:
                listed.append((name, command))
        if listed:
            limit = formatter.width - 6 - max(len(name) for name, _ in listed)
            with formatter.section("Commands"):
                formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in listed])


def missing_server_requirements() -> list[str]:
    """The distributions of the `server` extra that are not installed (none when voxrouter itself
    is not installed, as when it runs from a checkout on PYTHONPATH)."""
    try:
        requirements = importlib.metadata.requires("voxrouter") or []
    except importlib.metadata.PackageNotFoundError:
        return []
    missing = []
    for requirement in requirements:
        spec, _, marker = requirement.partition(";")
        name = _REQUIREMENT_NAME.match(spec.strip())
        if not _EXTRA_MARKER.search(marker) or name is None:
            continue
        try:
            importlib.metadata.distribution(name.group())
        except importlib.metadata.PackageNotFoundError:
            missing.append(name.group())
    return missing


def load_server_command(name: str) -> click.Command:
    """The server's command `name`, or a clear error when the server is not installed."""
    missing = missing_server_requirements()
    if missing:
        raise _server_not_installed(name, missing)
    try:
        # The one place the client package imports the server (tests/unit/test_client_imports.py).
        server_commands = importlib.import_module(_SERVER_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] == "voxrouter":
            raise
        raise _server_not_installed(name, [exc.name]) from None
    command: click.Command = server_commands.COMMANDS[name]
    return command


def _server_not_installed(command: str, missing: list[str]) -> click.ClickException:
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return click.ClickException(
        f"`voxrouter {command}` needs the server, which is not installed here (missing: {shown}). "
        f"Install voxrouter[server]: {SERVER_INSTALL}"
    )


@click.group(cls=_Main)
@user_commands.base_url_option
def main() -> None:
    """VoxRouter: one OpenAI-compatible endpoint for every TTS provider.

    Data-plane commands take an API key from VOXROUTER_API_KEY; account, key, billing and usage
    commands take the session saved by `voxrouter login`. `serve`, `engine` and `admin` need the
    server (pip install 'voxrouter[server]').
    """


user_commands.register(main)

if __name__ == "__main__":
    sys.exit(main(prog_name="voxrouter"))
